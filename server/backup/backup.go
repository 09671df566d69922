package backup

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/medops/medops/server/tasks"
)

// Options configure one backup run.
type Options struct {
	Client *Client
	Dest   Destination
	// Name is the first part of the file names (the MedOpsAPI's name).
	Name string
	// Retention is how many complete backups of Name to keep, this one
	// included.
	Retention int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Result is what a backup run wrote: the JSON line the sub-command prints.
type Result struct {
	File   string    `json:"file"`
	Tasks  int64     `json:"tasks"`
	SHA256 string    `json:"sha256"`
	Bytes  int64     `json:"bytes"`
	Time   time.Time `json:"time"`
	// Pruned are the files deleted to keep Retention.
	Pruned []string `json:"-"`
}

// Run takes one backup: it streams an export from the API into a gzipped
// file at the destination, checking the export as it passes (a stream cut
// short fails the upload, so no file is left), reads the file back and
// checks it again (checksum, format, count), then writes its .sha256, which
// makes it count, and prunes NAME's backups to the newest Retention.
func Run(ctx context.Context, o Options) (Result, error) {
	switch {
	case !ValidName(o.Name):
		return Result{}, fmt.Errorf("--name %q must be lower-case letters, digits, '-' and '.', as a Kubernetes name", o.Name)
	case o.Retention < 1:
		return Result{}, fmt.Errorf("--retention must be at least 1, not %d", o.Retention)
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	at := now().UTC().Truncate(time.Second)
	res := Result{File: FileName(o.Name, at), Time: at}

	body, err := o.Client.Export(ctx)
	if err != nil {
		return Result{}, err
	}
	defer body.Close()
	sum := sha256.New()
	size := &counter{}
	pr, pw := io.Pipe()
	streamed := make(chan error, 1)
	go func() {
		n, err := gzipVerified(body, io.MultiWriter(pw, sum, size))
		res.Tasks = n
		// A nil error ends the upload at EOF; any other fails it.
		pw.CloseWithError(err)
		streamed <- err
	}()
	putErr := o.Dest.Put(ctx, res.File, pr)
	pr.CloseWithError(errors.New("upload ended")) // unblocks the writer if Put stopped early
	if err := errors.Join(<-streamed, putErr); err != nil {
		// Put leaves nothing behind on an error; this is in case the
		// export failed after the last byte it uploaded.
		_ = o.Dest.Delete(context.WithoutCancel(ctx), res.File)
		return Result{}, fmt.Errorf("writing %s to %s: %w", res.File, o.Dest, err)
	}
	res.SHA256, res.Bytes = hex.EncodeToString(sum.Sum(nil)), size.n

	if err := verify(ctx, o.Dest, res.File, res.SHA256, res.Tasks); err != nil {
		_ = o.Dest.Delete(context.WithoutCancel(ctx), res.File)
		return Result{}, err
	}
	if err := o.Dest.Put(ctx, res.File+sumSuffix, strings.NewReader(res.SHA256+"  "+res.File+"\n")); err != nil {
		_ = o.Dest.Delete(context.WithoutCancel(ctx), res.File)
		return Result{}, err
	}
	res.Pruned, err = prune(ctx, o.Dest, o.Name, o.Retention, res.File)
	if err != nil {
		return res, fmt.Errorf("the backup %s is complete, but pruning old ones failed: %w", res.File, err)
	}
	return res, nil
}

// gzipVerified gzips the export r into w while reading it as an import
// would, and returns its task count: an export that is not whole and valid
// is an error before its end reaches w.
func gzipVerified(r io.Reader, w io.Writer) (int64, error) {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return 0, err
	}
	n, err := readAll(io.TeeReader(r, zw))
	if err != nil {
		return 0, fmt.Errorf("the export is not whole: %w", err)
	}
	return n, zw.Close()
}

// readAll reads an export to its trailer and returns its task count.
func readAll(r io.Reader) (int64, error) {
	ir, err := tasks.NewImportReader(r)
	if err != nil {
		return 0, err
	}
	for {
		if _, err := ir.Next(); err == io.EOF {
			return ir.Count(), nil
		} else if err != nil {
			return 0, err
		}
	}
}

// verify reads file back from d: its SHA-256 must be sum and it must be a
// whole export of count tasks.
func verify(ctx context.Context, d Destination, file, sum string, count int64) error {
	rc, err := d.Open(ctx, file)
	if err != nil {
		return fmt.Errorf("reading %s back: %w", file, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := readGzip(io.TeeReader(rc, h))
	if err != nil {
		return fmt.Errorf("reading %s back: %w", file, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("%s as stored has sha256 %s, not the %s written", file, got, sum)
	}
	if n != count {
		return fmt.Errorf("%s as stored holds %d tasks, not the %d written", file, n, count)
	}
	return nil
}

// readGzip reads a gzipped export to its end and returns its task count.
func readGzip(r io.Reader) (int64, error) {
	zr, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return 0, err
	}
	n, err := readAll(zr)
	if err != nil {
		return 0, err
	}
	// Whatever follows the gzip stream still counts for the checksum.
	_, err = io.Copy(io.Discard, r)
	return n, err
}

// prune deletes NAME's complete backups but the newest keep, and the
// incomplete ones older than current (failed runs).
func prune(ctx context.Context, d Destination, name string, keep int, current string) ([]string, error) {
	complete, incomplete, err := Complete(ctx, d, name)
	if err != nil {
		return nil, err
	}
	var pruned []string
	for _, b := range complete[:max(0, len(complete)-keep)] {
		// The checksum first: a backup half deleted no longer counts.
		if err := d.Delete(ctx, b.File+sumSuffix); err != nil {
			return pruned, err
		}
		if err := d.Delete(ctx, b.File); err != nil {
			return pruned, err
		}
		pruned = append(pruned, b.File)
	}
	for _, f := range incomplete {
		if f < current {
			if err := d.Delete(ctx, f); err != nil {
				return pruned, err
			}
			pruned = append(pruned, f)
		}
	}
	return pruned, nil
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// RestoreResult is what Restore did.
type RestoreResult struct {
	// File is the backup imported, or the one restored before (Skipped).
	File  string
	Tasks int64
	// Skipped: the store was restored before; nothing was imported.
	Skipped bool
}

// ErrStoreNotEmpty is a restore refused because the store holds tasks and
// was never restored: its tasks are newer than any backup.
var ErrStoreNotEmpty = errors.New("task store is not empty; refusing to restore")

// Restore imports the backup from ("latest": NAME's newest complete one)
// into im, once: the import records the file as the store's restore marker
// in the same transaction. A store that holds a marker was restored before
// and is left alone (whatever file "latest" now names: backups taken since
// are of the restored store); a store with tasks and no marker is refused.
// The file's checksum, format and count are checked before the import
// commits.
func Restore(ctx context.Context, im tasks.Importer, d Destination, name, from string) (RestoreResult, error) {
	marker, err := im.RestoreMarker(ctx)
	if err != nil {
		return RestoreResult{}, err
	}
	if marker != "" {
		return RestoreResult{File: marker, Skipped: true}, nil
	}
	file := from
	if from == "latest" {
		if !ValidName(name) {
			return RestoreResult{}, fmt.Errorf("--name %q must be lower-case letters, digits, '-' and '.', as a Kubernetes name", name)
		}
		complete, _, err := Complete(ctx, d, name)
		if err != nil {
			return RestoreResult{}, err
		}
		if len(complete) == 0 {
			return RestoreResult{}, fmt.Errorf("no complete backup of %s in %s", name, d)
		}
		file = complete[len(complete)-1].File
	}
	want, err := readSum(ctx, d, file)
	if err != nil {
		return RestoreResult{}, err
	}
	rc, err := d.Open(ctx, file)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("reading %s: %w", file, err)
	}
	defer rc.Close()
	h := sha256.New()
	next, err := verifiedStream(io.TeeReader(rc, h), h, want, file)
	if err != nil {
		return RestoreResult{}, err
	}
	res, err := im.Import(ctx, tasks.ImportOptions{Mode: tasks.ImportIntoEmpty, Marker: file}, next)
	if errors.Is(err, tasks.ErrNotEmpty) {
		return RestoreResult{}, ErrStoreNotEmpty
	}
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restoring %s: %w", file, err)
	}
	return RestoreResult{File: file, Tasks: res.Imported}, nil
}

// readSum reads file's .sha256: a backup without it is not complete.
func readSum(ctx context.Context, d Destination, file string) (string, error) {
	rc, err := d.Open(ctx, file+sumSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s has no %s in %s: it is not a complete backup", file, sumSuffix, d)
	}
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1024))
	if err != nil {
		return "", fmt.Errorf("reading %s%s: %w", file, sumSuffix, err)
	}
	sum, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if len(sum) != sha256.Size*2 {
		return "", fmt.Errorf("%s%s does not hold a SHA-256", file, sumSuffix)
	}
	return strings.ToLower(sum), nil
}

// verifiedStream reads a gzipped export whose bytes pass through h, and
// returns its Next; at the end of the tasks it checks that the file's
// SHA-256 is want, so an import sees io.EOF (and commits) only for the
// file its checksum names.
func verifiedStream(r io.Reader, h hash.Hash, want, file string) (func() (*tasks.Task, error), error) {
	br := bufio.NewReader(r)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("%s is not gzip: %w", file, err)
	}
	ir, err := tasks.NewImportReader(zr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return func() (*tasks.Task, error) {
		t, err := ir.Next()
		if err != io.EOF {
			return t, err
		}
		if _, err := io.Copy(io.Discard, br); err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return nil, fmt.Errorf("%s has sha256 %s, but its %s says %s", file, got, sumSuffix, want)
		}
		return nil, io.EOF
	}, nil
}
