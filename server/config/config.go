// Package config loads the medops-api configuration file into the shared
// v1alpha1.WorkloadConfig type, the same type the operator renders, so the
// file format has exactly one definition.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/medops/medops/api/v1alpha1"
)

// Environment variables that stand in for flags.
const (
	EnvConfig  = "MEDOPS_CONFIG"
	EnvListen  = "MEDOPS_LISTEN"
	EnvDataDir = "MEDOPS_DATA_DIR"
	// EnvPostgresDSNFile names the file with the PostgreSQL connection
	// string; setting it selects the PostgreSQL task store.
	EnvPostgresDSNFile = "MEDOPS_POSTGRES_DSN_FILE"
	// EnvTokenFile names the file with the bearer token (auth.tokenFile).
	EnvTokenFile = "MEDOPS_TOKEN_FILE"
	// EnvAuthDisabled, when true, serves without a token on purpose
	// (auth.disabled).
	EnvAuthDisabled = "MEDOPS_AUTH_DISABLED"
	// EnvSharedCacheHMACKeyFile names the file with the key that signs the
	// shared cache tier's entries (sharedCache.hmacKeyFile).
	EnvSharedCacheHMACKeyFile = "MEDOPS_SHARED_CACHE_HMAC_KEY_FILE"
	// EnvRegion is the replica's region; the gateway prefers mirrors there.
	EnvRegion = v1alpha1.EnvRegion
)

// Names of the settings that decide who may use the API, as the access
// error spells them out.
const (
	flagTokenFile    = "token-file"
	flagAuthDisabled = "auth-disabled"
)

// Load reads, defaults and validates the file at path. An empty path gives
// the all-defaults configuration. Every error names the file and the field.
func Load(path string) (*v1alpha1.WorkloadConfig, error) {
	return load(path, nil)
}

// load reads the file at path, applies override (the flags) before the
// defaults, since some defaults depend on overridden fields (the shutdown
// delay on listen), then defaults and validates.
func load(path string, override func(*v1alpha1.WorkloadConfig)) (*v1alpha1.WorkloadConfig, error) {
	var data []byte
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	cfg, err := parse(data, override)
	if err != nil {
		if path == "" {
			return nil, fmt.Errorf("config: %w", err)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a YAML (or JSON) document strictly: unknown fields and
// duplicate keys are errors, with the field's full path. It then applies
// defaults and validates.
func Parse(data []byte) (*v1alpha1.WorkloadConfig, error) {
	return parse(data, nil)
}

func parse(data []byte, override func(*v1alpha1.WorkloadConfig)) (*v1alpha1.WorkloadConfig, error) {
	cfg := &v1alpha1.WorkloadConfig{}
	if len(strings.TrimSpace(string(data))) > 0 {
		if err := decodeStrict(data, cfg); err != nil {
			return nil, err
		}
	}
	if override != nil {
		override(cfg)
	}
	cfg.SetDefaults()
	if err := validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

func validate(cfg *v1alpha1.WorkloadConfig) error {
	errs := cfg.Validate()
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

func decodeStrict(data []byte, cfg *v1alpha1.WorkloadConfig) error {
	// First a loose pass into generic values, to report unknown fields with
	// their full path (cache.shardz); encoding/json's own unknown-field
	// error names only the last key.
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	var generic any
	if err := json.Unmarshal(js, &generic); err != nil {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	if generic == nil {
		return nil // a document of only comments or "null"
	}
	if _, ok := generic.(map[string]any); !ok {
		return fmt.Errorf("the document must be a mapping of fields, not %s", jsonKind(generic))
	}
	if err := checkFields(reflect.TypeFor[v1alpha1.WorkloadConfig](), generic, ""); err != nil {
		return err
	}
	// Then the strict decode, which also catches duplicate keys and wrong
	// types.
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s: Invalid value: must be %s, not %s", te.Field, te.Type, te.Value)
		}
		// yaml's messages span lines; one line reads better in a log.
		return fmt.Errorf("invalid document: %s", strings.Join(strings.Fields(err.Error()), " "))
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// checkFields walks a decoded document along the Go type and returns an
// error for the first key (in sorted order, so messages are stable) that
// the type has no field for.
func checkFields(t reflect.Type, v any, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// Types with their own decoding (Quantity, Duration) parse scalars;
	// decode the value here so a bad one is reported with its path.
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		raw, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("%s: Invalid value: %s: %w", path, raw, err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // wrong type: the strict decode reports it
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			p := join(path, k)
			if !ok {
				return fmt.Errorf("%s: unknown field %q", p, k)
			}
			if err := checkFields(ft, m[k], p); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		items, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, item := range items {
			if err := checkFields(t.Elem(), item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// Flags are the command-line settings of medops-api.
type Flags struct {
	ConfigPath      string
	Listen          string
	DataDir         string
	PostgresDSNFile string
	TokenFile       string
	AuthDisabled    bool
	// SharedCacheHMACKeyFile overrides the file's sharedCache.hmacKeyFile.
	SharedCacheHMACKeyFile string
	// Region is where this replica runs (a topology.kubernetes.io/region
	// value). It belongs to the pod, not to the shared configuration file.
	Region string
}

// ParseFlags reads args (without the program name). Each flag falls back to
// its environment variable; flags win over the environment, and both win
// over the file. Usage and flag errors go to output.
func ParseFlags(name string, args []string, getenv func(string) string, output io.Writer) (Flags, error) {
	var f Flags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&f.ConfigPath, "config", getenv(EnvConfig), "YAML configuration file (env "+EnvConfig+"); empty means all defaults")
	fs.StringVar(&f.Listen, "listen", getenv(EnvListen), "listen address host:port, overrides the file (env "+EnvListen+")")
	fs.StringVar(&f.DataDir, "data-dir", getenv(EnvDataDir), "data directory, overrides the file (env "+EnvDataDir+")")
	fs.StringVar(&f.PostgresDSNFile, "postgres-dsn-file", getenv(EnvPostgresDSNFile),
		"file holding a PostgreSQL connection string: keep tasks in PostgreSQL instead of bbolt in the data directory, overrides the file's postgres.dsnFile (env "+EnvPostgresDSNFile+")")
	fs.StringVar(&f.TokenFile, flagTokenFile, getenv(EnvTokenFile),
		"file holding the bearer token that writes and task reads must present, overrides the file's auth.tokenFile (env "+EnvTokenFile+")")
	authDisabled := false
	if v := getenv(EnvAuthDisabled); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fmt.Fprintf(output, "%s: %s=%q: must be true or false\n", name, EnvAuthDisabled, v)
			return Flags{}, fmt.Errorf("%s: %w", EnvAuthDisabled, err)
		}
		authDisabled = b
	}
	fs.BoolVar(&f.AuthDisabled, flagAuthDisabled, authDisabled,
		"serve every endpoint without a token, on any listen address: the file's auth.disabled (env "+EnvAuthDisabled+"=true)")
	fs.StringVar(&f.SharedCacheHMACKeyFile, "shared-cache-hmac-key-file", getenv(EnvSharedCacheHMACKeyFile),
		"file holding the key that signs the shared cache tier's entries (cache.shared), overrides the file's sharedCache.hmacKeyFile (env "+EnvSharedCacheHMACKeyFile+")")
	fs.StringVar(&f.Region, "region", getenv(EnvRegion),
		"the region this replica runs in, as in the node label topology.kubernetes.io/region: the gateway prefers upstream mirrors there (env "+EnvRegion+")")
	if err := fs.Parse(args); err != nil {
		return Flags{}, err
	}
	if fs.NArg() > 0 {
		return Flags{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if msgs := validation.IsValidLabelValue(f.Region); len(msgs) > 0 {
		err := fmt.Errorf("--region (env %s) %q: %s", EnvRegion, f.Region, strings.Join(msgs, "; "))
		fmt.Fprintf(output, "%s: %v\n", name, err)
		return Flags{}, err
	}
	return f, nil
}

// FromFlags loads the file the flags name and applies the overrides, then
// checks that the API is not left open beyond loopback (CheckAccess).
func FromFlags(f Flags) (*v1alpha1.WorkloadConfig, error) {
	cfg, err := load(f.ConfigPath, func(cfg *v1alpha1.WorkloadConfig) {
		if f.Listen != "" {
			cfg.Listen = f.Listen
		}
		if f.DataDir != "" {
			cfg.DataDir = f.DataDir
		}
		if f.PostgresDSNFile != "" {
			cfg.Postgres = &v1alpha1.WorkloadPostgres{DSNFile: f.PostgresDSNFile}
		}
		if f.TokenFile != "" {
			cfg.Auth.TokenFile = f.TokenFile
		}
		if f.SharedCacheHMACKeyFile != "" {
			if cfg.SharedCache == nil {
				cfg.SharedCache = &v1alpha1.WorkloadSharedCache{}
			}
			cfg.SharedCache.HMACKeyFile = f.SharedCacheHMACKeyFile
		}
		if f.AuthDisabled {
			cfg.Auth.Disabled = true
		}
	})
	if err != nil {
		return nil, err
	}
	if err := CheckAccess(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// CheckAccess refuses an API without a bearer token on an address other
// machines can reach, unless auth.disabled says so on purpose: an image
// listening on :8080 must never be open to anyone by omission. On loopback
// only local processes can connect, which suits a person trying it out
// (OpenAccess then says what to warn about).
func CheckAccess(cfg *v1alpha1.WorkloadConfig) error {
	if cfg.Auth.Disabled || cfg.Auth.TokenFile != "" || v1alpha1.ListensOnLoopback(cfg.Listen) {
		return nil
	}
	return fmt.Errorf("listen %q is not a loopback address and no bearer token is configured, so anyone who can reach it could read, change and delete every task: "+
		"set auth.tokenFile (--%s, env %s) to require a token, or auth.disabled: true (--%s, env %s=true) to serve without one on purpose",
		cfg.Listen, flagTokenFile, EnvTokenFile, flagAuthDisabled, EnvAuthDisabled)
}

// OpenAccess says why the API serves without a token, for a warning at
// start-up; "" when a token is required.
func OpenAccess(cfg *v1alpha1.WorkloadConfig) string {
	switch {
	case cfg.Auth.Disabled:
		return "auth.disabled is set: every endpoint, reads and writes, is open to anyone who can reach " + cfg.Listen
	case cfg.Auth.TokenFile == "":
		return fmt.Sprintf("no auth.tokenFile (--%s): every endpoint, reads and writes, is open to every local process on %s; "+
			"set a token file before listening on another address", flagTokenFile, cfg.Listen)
	}
	return ""
}
