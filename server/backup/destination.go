// Package backup writes task exports to a destination (a folder, or an S3
// bucket), verifies them, prunes old ones and restores them into a task
// store: what the medops-api backup and restore sub-commands do.
//
// A backup of NAME taken at T is two objects:
//
//	NAME-20060102T150405Z.ndjson.gz         the gzipped export (tasks.Export's format)
//	NAME-20060102T150405Z.ndjson.gz.sha256  its SHA-256, as sha256sum writes it
//
// The checksum is written last, after the backup was read back and
// verified, so a backup counts (for restore's "latest" and for pruning)
// only once its .sha256 exists: a run that fails half-way leaves nothing
// that looks complete.
package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Destination keeps backup objects by name.
type Destination interface {
	// Put stores name with the content of r. The object appears whole or
	// not at all: an error from r, or a failure, leaves nothing under name.
	Put(ctx context.Context, name string, r io.Reader) error
	// Open reads name; a missing object gives an error matching
	// fs.ErrNotExist.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// List returns the names of every object, in any order.
	List(ctx context.Context) ([]string, error)
	// Delete removes name; a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// String names the destination for messages.
	String() string
}

// TimeFormat is the UTC time in a backup's name.
const TimeFormat = "20060102T150405Z"

const (
	fileSuffix = ".ndjson.gz"
	sumSuffix  = ".sha256"
)

// FileName is the name of NAME's backup taken at t.
func FileName(name string, t time.Time) string {
	return name + "-" + t.UTC().Format(TimeFormat) + fileSuffix
}

// ValidName reports whether name can name backups: what a Kubernetes
// object name allows (the operator uses the MedOpsAPI's).
func ValidName(name string) bool {
	return len(name) > 0 && len(name) <= 200 && nameRE.MatchString(name)
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// Backup is one complete backup found at a destination.
type Backup struct {
	File string
	Time time.Time
}

// Complete lists NAME's complete backups (those with their .sha256),
// oldest first, and the names of incomplete ones (a backup file without
// its checksum: a run that failed or is still running).
func Complete(ctx context.Context, d Destination, name string) (complete []Backup, incomplete []string, err error) {
	names, err := d.List(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing %s: %w", d, err)
	}
	have := make(map[string]bool, len(names))
	for _, n := range names {
		have[n] = true
	}
	prefix := name + "-"
	for _, n := range names {
		stamp, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		stamp, ok = strings.CutSuffix(stamp, fileSuffix)
		if !ok || len(stamp) != len(TimeFormat) {
			continue
		}
		t, err := time.Parse(TimeFormat, stamp)
		if err != nil {
			continue
		}
		if have[n+sumSuffix] {
			complete = append(complete, Backup{File: n, Time: t})
		} else {
			incomplete = append(incomplete, n)
		}
	}
	slices.SortFunc(complete, func(a, b Backup) int { return a.Time.Compare(b.Time) })
	return complete, incomplete, nil
}

// Dir is a destination folder, such as a mounted PersistentVolumeClaim.
type Dir struct{ Path string }

func (d Dir) String() string { return "folder " + d.Path }

// Put writes a hidden temporary file, syncs it and renames it into place,
// then syncs the folder: after a crash the file is either whole or absent.
func (d Dir) Put(ctx context.Context, name string, r io.Reader) (err error) {
	if err := checkObjectName(name); err != nil {
		return err
	}
	f, err := os.CreateTemp(d.Path, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Chmod(f.Name(), 0o640); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), filepath.Join(d.Path, name)); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return syncDir(d.Path)
}

func syncDir(path string) error {
	dir, err := os.Open(path)
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return nil
}

// Open opens name in the folder.
func (d Dir) Open(_ context.Context, name string) (io.ReadCloser, error) {
	if err := checkObjectName(name); err != nil {
		return nil, err
	}
	return os.Open(filepath.Join(d.Path, name))
}

// List lists the folder's files, without hidden (temporary) ones.
func (d Dir) List(context.Context) ([]string, error) {
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Delete removes name from the folder.
func (d Dir) Delete(_ context.Context, name string) error {
	if err := checkObjectName(name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(d.Path, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// checkObjectName keeps names inside the destination.
func checkObjectName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return fmt.Errorf("%q is not a backup file name", name)
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
