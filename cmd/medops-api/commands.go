package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/medops/medops/server/backup"
	"github.com/medops/medops/server/config"
	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/store/pgstore"
	"github.com/medops/medops/server/tasks"
)

// The sub-commands: export and import talk to a running API (a laptop
// through kubectl port-forward, or the backup CronJob through the
// Service); backup writes an export to a folder or an S3 bucket; restore
// runs before the server, on its store. Without a sub-command medops-api
// serves.
var subcommands = map[string]func(ctx context.Context, args []string, env environ) int{
	"export":  runExportCmd,
	"import":  runImportCmd,
	"backup":  runBackupCmd,
	"restore": runRestoreCmd,
}

// environ is what a sub-command gets of its process.
type environ struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// dispatch runs the sub-command args name, or the server.
func dispatch(sigs <-chan os.Signal, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if cmd, ok := subcommands[args[0]]; ok {
			// A sub-command stops at the first signal: its context ends,
			// and what it was writing is left incomplete (never as a
			// finished backup).
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if sigs != nil {
				go func() {
					select {
					case <-sigs:
						cancel()
					case <-ctx.Done():
					}
				}()
			}
			return cmd(ctx, args[1:], environ{getenv, stdin, stdout, stderr})
		}
	}
	return run(sigs, args, getenv, stdout, stderr)
}

// usageError is a command line the sub-command cannot run: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// finish prints err the way every sub-command does and returns the exit
// code: 0, 2 for a usage error (flag's own errors included), 1 otherwise.
// When termLog is set, the error goes there too, for the pod's terminated
// message.
func finish(env environ, name string, err error, termLog string) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	}
	msg := fmt.Sprintf("medops-api %s: %v", name, err)
	fmt.Fprintln(env.stderr, msg)
	if termLog != "" {
		_ = os.WriteFile(termLog, []byte(msg+"\n"), 0o644)
	}
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, errFlags) {
		return 2
	}
	return 1
}

var errFlags = errors.New("bad flags")

// parse parses a sub-command's flags; the flag package prints its errors
// and the usage.
func parse(fs *flag.FlagSet, args []string, env environ) error {
	fs.SetOutput(env.stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errFlags
	}
	return nil
}

// report writes v as one JSON line to stdout and, when set, to the
// termination log.
func report(env environ, termLog string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := env.stdout.Write(b); err != nil {
		return err
	}
	if termLog != "" {
		if err := os.WriteFile(termLog, b, 0o644); err != nil {
			return fmt.Errorf("--termination-log: %w", err)
		}
	}
	return nil
}

type apiFlags struct{ url, tokenFile string }

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.url, "url", "", "the API's URL, with its server.basePath if any (e.g. http://127.0.0.1:8080)")
	fs.StringVar(&a.tokenFile, "token-file", "", "file holding the API's bearer token")
}

func (a *apiFlags) client() (*backup.Client, error) {
	if a.url == "" {
		return nil, usageError{"--url is required"}
	}
	return backup.NewClient(a.url, a.tokenFile)
}

func runExportCmd(ctx context.Context, args []string, env environ) int {
	fs := flag.NewFlagSet("medops-api export", flag.ContinueOnError)
	var (
		api apiFlags
		out string
	)
	api.register(fs)
	fs.StringVar(&out, "o", "", "write the export to this file (gzipped when it ends in .gz) instead of stdout; it appears only once whole")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: medops-api export --url URL --token-file FILE [-o FILE]")
		fs.PrintDefaults()
	}
	err := parse(fs, args, env)
	if err == nil && fs.NArg() > 0 {
		err = usageError{"unexpected arguments: " + strings.Join(fs.Args(), " ")}
	}
	if err == nil {
		err = exportTo(ctx, &api, out, env)
	}
	return finish(env, "export", err, "")
}

// exportTo streams an export into out (or stdout), checking it on the way:
// an export cut short is an error, and leaves no file.
func exportTo(ctx context.Context, api *apiFlags, out string, env environ) error {
	c, err := api.client()
	if err != nil {
		return err
	}
	body, err := c.Export(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	if out == "" || out == "-" {
		w := bufio.NewWriter(env.stdout)
		if _, err := readExport(io.TeeReader(body, w)); err != nil {
			return err
		}
		return w.Flush()
	}
	dir := filepath.Dir(out)
	f, err := os.CreateTemp(dir, "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	var w io.Writer = f
	var zw *gzip.Writer
	if strings.HasSuffix(out, ".gz") {
		zw = gzip.NewWriter(f)
		w = zw
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	n, err := readExport(io.TeeReader(body, bw))
	if err == nil {
		err = bw.Flush()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "medops-api export: %d tasks written to %s\n", n, out)
	return nil
}

// readExport reads an export to its verified trailer.
func readExport(r io.Reader) (int64, error) {
	ir, err := tasks.NewImportReader(r)
	if err != nil {
		return 0, err
	}
	for {
		_, err := ir.Next()
		if err == io.EOF {
			return ir.Count(), nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func runImportCmd(ctx context.Context, args []string, env environ) int {
	fs := flag.NewFlagSet("medops-api import", flag.ContinueOnError)
	var (
		api  apiFlags
		mode string
	)
	api.register(fs)
	fs.StringVar(&mode, "mode", "", "what to do with a store that holds tasks: empty (refuse; the default), skip-existing, overwrite")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: medops-api import --url URL --token-file FILE [--mode M] FILE   (FILE may be gzipped; - reads stdin)")
		fs.PrintDefaults()
	}
	err := parse(fs, args, env)
	if err == nil {
		err = importFrom(ctx, &api, mode, fs.Args(), env)
	}
	return finish(env, "import", err, "")
}

func importFrom(ctx context.Context, api *apiFlags, modeName string, args []string, env environ) error {
	if len(args) != 1 {
		return usageError{"name one export file to import (- for stdin)"}
	}
	mode, err := tasks.ParseImportMode(modeName)
	if err != nil {
		return usageError{"--" + err.Error()}
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	in := env.stdin
	if args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	br := bufio.NewReaderSize(in, 64<<10)
	// gzip's magic number: a backup file goes up as it is, and the API
	// unzips it.
	magic, _ := br.Peek(2)
	res, err := c.Import(ctx, mode, br, bytes.Equal(magic, []byte{0x1f, 0x8b}))
	if err != nil {
		return err
	}
	return report(env, "", res)
}

// destFlags choose a backup destination.
type destFlags struct {
	dir                                   string
	s3Endpoint, s3Bucket, s3Prefix, s3Reg string
	s3Insecure                            bool
}

func (d *destFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.dir, "dir", "", "folder of the backups (a mounted volume)")
	fs.StringVar(&d.s3Endpoint, "s3-endpoint", "", "S3 endpoint host:port; credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	fs.StringVar(&d.s3Bucket, "s3-bucket", "", "S3 bucket (it must exist)")
	fs.StringVar(&d.s3Prefix, "s3-prefix", "", "prefix of the object names in the bucket")
	fs.StringVar(&d.s3Reg, "s3-region", "", "S3 region")
	fs.BoolVar(&d.s3Insecure, "s3-insecure", false, "talk plain HTTP to the S3 endpoint")
}

func (d *destFlags) open(ctx context.Context, getenv func(string) string) (backup.Destination, error) {
	switch {
	case d.dir != "" && d.s3Endpoint != "":
		return nil, usageError{"name one destination: --dir or --s3-endpoint, not both"}
	case d.dir != "":
		if fi, err := os.Stat(d.dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--dir %s is not a folder", d.dir)
		}
		return backup.Dir{Path: d.dir}, nil
	case d.s3Endpoint != "":
		if d.s3Bucket == "" {
			return nil, usageError{"--s3-bucket is required with --s3-endpoint"}
		}
		return backup.NewS3(ctx, backup.S3Options{
			Endpoint: d.s3Endpoint, Bucket: d.s3Bucket, Prefix: d.s3Prefix, Region: d.s3Reg, Insecure: d.s3Insecure,
			AccessKey: getenv("AWS_ACCESS_KEY_ID"), SecretKey: getenv("AWS_SECRET_ACCESS_KEY"),
		})
	}
	return nil, usageError{"name a destination: --dir DIR, or --s3-endpoint HOST:PORT --s3-bucket B"}
}

func runBackupCmd(ctx context.Context, args []string, env environ) int {
	fs := flag.NewFlagSet("medops-api backup", flag.ContinueOnError)
	var (
		api       apiFlags
		dest      destFlags
		name      string
		retention int
		termLog   string
	)
	api.register(fs)
	dest.register(fs)
	fs.StringVar(&name, "name", "", "name of the backups: files are NAME-<UTC time>.ndjson.gz")
	fs.IntVar(&retention, "retention", 0, "how many backups of NAME to keep, this one included")
	fs.StringVar(&termLog, "termination-log", "", "also write the result line (or the error) to this file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: medops-api backup --url URL --token-file F --name NAME --retention N (--dir DIR | --s3-endpoint HOST:PORT --s3-bucket B [--s3-prefix P] [--s3-region R] [--s3-insecure]) [--termination-log PATH]")
		fs.PrintDefaults()
	}
	err := parse(fs, args, env)
	if err == nil && fs.NArg() > 0 {
		err = usageError{"unexpected arguments: " + strings.Join(fs.Args(), " ")}
	}
	if err == nil {
		err = func() error {
			c, err := api.client()
			if err != nil {
				return err
			}
			d, err := dest.open(ctx, env.getenv)
			if err != nil {
				return err
			}
			res, err := backup.Run(ctx, backup.Options{Client: c, Dest: d, Name: name, Retention: retention})
			for _, p := range res.Pruned {
				fmt.Fprintf(env.stderr, "medops-api backup: pruned %s\n", p)
			}
			if err != nil {
				return err
			}
			return report(env, termLog, res)
		}()
	}
	return finish(env, "backup", err, termLog)
}

func runRestoreCmd(ctx context.Context, args []string, env environ) int {
	fs := flag.NewFlagSet("medops-api restore", flag.ContinueOnError)
	var (
		dest    destFlags
		cfgPath string
		dsnFile string
		dataDir string
		from    string
		name    string
		termLog string
	)
	dest.register(fs)
	fs.StringVar(&cfgPath, "config", env.getenv(config.EnvConfig), "the server's configuration file (env "+config.EnvConfig+"): the store to restore into")
	fs.StringVar(&dsnFile, "postgres-dsn-file", env.getenv(config.EnvPostgresDSNFile), "as the server's flag: restore into PostgreSQL")
	fs.StringVar(&dataDir, "data-dir", env.getenv(config.EnvDataDir), "as the server's flag: the data directory of the bbolt store")
	fs.StringVar(&from, "from", "", "the backup file to restore, or latest (NAME's newest complete backup)")
	fs.StringVar(&name, "name", "", "name of the backups (files NAME-<UTC time>.ndjson.gz)")
	fs.StringVar(&termLog, "termination-log", "", "also write the result line (or the error) to this file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: medops-api restore --config FILE [--postgres-dsn-file F] --from latest|FILE --name NAME (--dir DIR | s3 flags) [--termination-log PATH]")
		fs.PrintDefaults()
	}
	err := parse(fs, args, env)
	switch {
	case err != nil:
	case fs.NArg() > 0:
		err = usageError{"unexpected arguments: " + strings.Join(fs.Args(), " ")}
	case from == "":
		err = usageError{"--from is required: latest, or a backup file name"}
	case name == "" && from == "latest":
		err = usageError{"--name is required with --from latest"}
	}
	if err == nil {
		err = restore(ctx, env, config.Flags{ConfigPath: cfgPath, PostgresDSNFile: dsnFile, DataDir: dataDir}, &dest, name, from, termLog)
	}
	return finish(env, "restore", err, termLog)
}

func restore(ctx context.Context, env environ, f config.Flags, dest *destFlags, name, from, termLog string) error {
	cfg, err := config.FromFlags(f)
	if err != nil {
		return err
	}
	d, err := dest.open(ctx, env.getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(env.stderr, nil))
	var st tasks.Store
	if dsn := cfg.PostgresDSNFile(); dsn != "" {
		s, err := pgstore.Open(ctx, pgstore.Options{DSNFile: dsn, Logger: log})
		if err != nil {
			return fmt.Errorf("postgres.dsnFile: %w", err)
		}
		st = s
	} else {
		s, err := boltstore.Open(cfg.DataDir, boltstore.Options{})
		if err != nil {
			return err
		}
		st = s
	}
	im, ok := st.(tasks.Importer)
	if !ok {
		_ = st.Close()
		return errors.New("the task store cannot import")
	}
	res, err := backup.Restore(ctx, im, d, name, from)
	if cerr := st.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if res.Skipped {
		return report(env, termLog, struct {
			Skipped string `json:"skipped"`
			File    string `json:"file"`
		}{"already restored", res.File})
	}
	return report(env, termLog, struct {
		Restored string `json:"restored"`
		Tasks    int64  `json:"tasks"`
	}{res.File, res.Tasks})
}
