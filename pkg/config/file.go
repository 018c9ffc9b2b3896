package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// DefaultConfigFile is where a packaged master reads its settings from.
const DefaultConfigFile = "/etc/k8s-master/config.yaml"

// NotInFile names flags that have no key in the config file: they choose
// the file itself or only make sense on a command line.
var NotInFile = []string{"config", "help", "foreground"}

// FileKeys are the keys a config file may set for a command with flags fs:
// its flags' names, less NotInFile. The flags are the one source of truth,
// so a new flag is a new key.
func FileKeys(fs *pflag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(NotInFile, f.Name) && !f.Hidden {
			keys = append(keys, f.Name)
		}
	})
	return keys
}

// ApplyFile sets the flags of fs from the YAML config file at path, except
// the flags already given on the command line, which win. Keys are flag
// names; keys lists the valid ones (nil: FileKeys(fs)), and a valid key
// without a flag in fs (one file serves several commands) is left alone.
// It returns the keys the file set; a missing file is an error only when
// required. Unknown keys and values of the wrong type are errors naming the
// key and its line; every problem is reported at once.
func ApplyFile(fs *pflag.FlagSet, keys []string, path string, required bool) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	set, err := ApplyYAML(fs, keys, data)
	if err != nil {
		return nil, fmt.Errorf("config file %s:\n  %s", path, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return set, nil
}

// ApplyYAML is ApplyFile on the file's contents.
func ApplyYAML(fs *pflag.FlagSet, keys []string, data []byte) ([]string, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // empty or only comments
		}
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("line %d: only one YAML document is allowed", extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: expected a mapping of settings (key: value)", root.Line)
	}
	if keys == nil {
		keys = FileKeys(fs)
	}
	var errs []error
	var set []string
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("line %d: key %q: %s", k.Line, name, fmt.Sprintf(format, a...)))
		}
		if !slices.Contains(keys, name) {
			bad("unknown key (known keys: %s)", strings.Join(keys, ", "))
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			// A key of the file that this command has no flag for (one
			// file serves several commands): nothing to set here.
			continue
		}
		if prev, dup := seen[name]; dup {
			bad("set twice (first on line %d)", prev)
			continue
		}
		seen[name] = k.Line
		values, err := scalarValues(f, v)
		if err != nil {
			bad("%v", err)
			continue
		}
		if f.Changed {
			continue // the command line wins
		}
		if len(values) == 0 {
			// An empty list: the setting is given, as empty.
			if err := f.Value.(pflag.SliceValue).Replace(nil); err != nil {
				bad("%v", err)
				continue
			}
			f.Changed = true
		}
		for _, s := range values {
			if err := fs.Set(name, s); err != nil {
				bad("wrong type: %q is not a valid %s", s, typeName(f))
				break
			}
		}
		set = append(set, name)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}

func isList(f *pflag.Flag) bool {
	_, ok := f.Value.(pflag.SliceValue)
	return ok
}

func typeName(f *pflag.Flag) string {
	switch t := f.Value.Type(); t {
	case "int", "int32", "int64", "uint", "uint16", "uint32", "uint64":
		return "integer"
	case "stringSlice", "stringArray":
		return "list of strings"
	default:
		return t
	}
}

// scalarValues checks the YAML node's shape against the flag's type and
// returns the text(s) to give the flag.
func scalarValues(f *pflag.Flag, v *yaml.Node) ([]string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return nil, fmt.Errorf("wrong type: no value; give a %s or remove the key", typeName(f))
		}
		if t := f.Value.Type(); t == "string" && v.Tag != "!!str" {
			// 6443 or true where text is expected is most likely a
			// mistake in the key; quote it if meant.
			return nil, fmt.Errorf("wrong type: %s is not a string (quote it if it is meant as one)", v.Value)
		}
		return []string{v.Value}, nil
	case yaml.SequenceNode:
		if !isList(f) {
			return nil, fmt.Errorf("wrong type: a list where a %s is expected", typeName(f))
		}
		var out []string
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return nil, fmt.Errorf("wrong type: line %d: list items must be strings", item.Line)
			}
			out = append(out, item.Value)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("wrong type: a mapping where a %s is expected", typeName(f))
	}
}

// WriteDefaults writes a commented config file listing every key of fs with
// its description and default, all commented out: the file as shipped sets
// nothing, so every setting keeps its built-in default until uncommented.
func WriteDefaults(w io.Writer, fs *pflag.FlagSet) error {
	var b strings.Builder
	b.WriteString("# k8s-master configuration. Every key is a flag of `k8s-master init` and\n")
	b.WriteString("# `k8s-master start` without its dashes; a flag given on the command line\n")
	b.WriteString("# overrides the key. Uncomment a key to set it. A key set here counts as\n")
	b.WriteString("# given: init and start refuse it when it contradicts the cluster recorded\n")
	b.WriteString("# in the data directory.\n")
	for _, name := range FileKeys(fs) {
		f := fs.Lookup(name)
		b.WriteString("\n")
		for _, line := range strings.Split(f.Usage, "\n") {
			b.WriteString("# " + line + "\n")
		}
		v := defaultYAML(f)
		if !strings.HasPrefix(v, "\n") {
			v = " " + v
		}
		fmt.Fprintf(&b, "#%s:%s\n", name, v)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func defaultYAML(f *pflag.Flag) string {
	if isList(f) {
		items := f.Value.(pflag.SliceValue).GetSlice()
		if len(items) == 0 {
			return "[]"
		}
		out, _ := yaml.Marshal(items)
		return "\n#  " + strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n#  ")
	}
	if f.Value.Type() == "string" {
		out, _ := yaml.Marshal(f.DefValue)
		return strings.TrimSpace(string(out))
	}
	return f.DefValue
}
