package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/agent"
)

// setFlags collects repeated --set key=value flags.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// configureCmd is `seine-agent configure --config <file> --set key=value...`:
// the MSI runs it to write its properties (NODENAME, KUBECONFIG, UPLINK, ...)
// into the configuration it installed. Keys are the file's YAML keys, dotted
// for nested ones (ovs.dbEndpoint); an empty value leaves the key as it is.
// An empty nodeName becomes the host name, lowercased. The result must be a
// valid configuration, else the file is left unchanged.
func (c *cli) configureCmd(args []string) error {
	var spec serviceSpec
	var sets setFlags
	fs := c.flags("configure", &spec)
	fs.Var(&sets, "set", "key=value to write into the configuration (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	old, err := os.ReadFile(spec.Config)
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	host, _ := os.Hostname()
	out, err := configure(old, sets, host)
	if err != nil {
		return fmt.Errorf("configure %s: %w", spec.Config, err)
	}
	tmp := spec.Config + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := os.Rename(tmp, spec.Config); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("configure: %w", err)
	}
	fmt.Fprintf(c.stdout, "configured %s\n", spec.Config)
	return nil
}

// configure applies sets to the configuration file's text and returns the
// new text, validated.
func configure(text []byte, sets []string, hostname string) ([]byte, error) {
	js, err := yaml.YAMLToJSON(text)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	for _, kv := range sets {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("--set %q: want key=value", kv)
		}
		if val = strings.TrimSpace(val); val == "" {
			continue
		}
		if err := setKey(doc, strings.Split(key, "."), val); err != nil {
			return nil, fmt.Errorf("--set %s: %w", key, err)
		}
	}
	if name, _ := doc["nodeName"].(string); strings.TrimSpace(name) == "" {
		if hostname == "" {
			return nil, errors.New("nodeName is empty and the host name is unknown")
		}
		doc["nodeName"] = strings.ToLower(hostname)
	}
	// Decode strictly into the agent's own type: unknown keys and values
	// of the wrong type are errors, and the output keeps its field order.
	js, err = json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var cfg agent.Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, err
	}
	// encoding/json matches keys case-insensitively; the file's keys are
	// exact, so every key set must be one the agent writes back.
	if err := knownKeys(&cfg, sets); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	out, err := yaml.Marshal(&cfg)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Written by `seine-agent configure` (the installer); restart the agent after editing.\n"), out...), nil
}

// knownKeys checks that the keys of sets are spelled as cfg's own.
func knownKeys(cfg *agent.Config, sets []string) error {
	js, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	var known map[string]any
	if err := json.Unmarshal(js, &known); err != nil {
		return err
	}
	for _, kv := range sets {
		key, _, _ := strings.Cut(kv, "=")
		m := known
		for _, k := range strings.Split(key, ".") {
			v, ok := m[k]
			if !ok {
				return fmt.Errorf("unknown key %q", key)
			}
			m, _ = v.(map[string]any)
		}
	}
	return nil
}

// setKey sets doc[path...] to val, converting val to the type of the value
// it replaces (numbers and booleans stay numbers and booleans).
func setKey(doc map[string]any, path []string, val string) error {
	for _, k := range path[:len(path)-1] {
		next, ok := doc[k].(map[string]any)
		if !ok {
			if _, exists := doc[k]; exists {
				return fmt.Errorf("%s is not a map", k)
			}
			next = map[string]any{}
			doc[k] = next
		}
		doc = next
	}
	last := path[len(path)-1]
	switch doc[last].(type) {
	case float64:
		n, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return fmt.Errorf("want a number: %w", err)
		}
		doc[last] = n
	case bool:
		b, err := strconv.ParseBool(val)
		if err != nil {
			return fmt.Errorf("want true or false: %w", err)
		}
		doc[last] = b
	default:
		doc[last] = val
	}
	return nil
}

// purgeCmd is `seine-agent purge`: it removes what the agent wrote on the
// node (its state directory, the CNI configuration, its socket, the log
// file), for uninstallers. What is already gone is not an error.
func (c *cli) purgeCmd(args []string) error {
	var spec serviceSpec
	if err := c.flags("purge", &spec).Parse(args); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(spec.Config)
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	var errs []error
	if err := removeDir(cfg.StateDir); err != nil {
		errs = append(errs, err)
	}
	for _, f := range []string{cfg.CNISocket, spec.LogFile} {
		if f == "" {
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if cfg.CNIConfDir != "" {
		f := filepath.Join(cfg.CNIConfDir, agent.CNIConfFile)
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	fmt.Fprintf(c.stdout, "purged %s\n", cfg.StateDir)
	return nil
}

// removeDir removes dir and its contents, refusing a root or a directory
// right under one, where a mistyped stateDir would do real damage.
func removeDir(dir string) error {
	clean := filepath.Clean(dir)
	parent := filepath.Dir(clean)
	if parent == clean || filepath.Dir(parent) == parent {
		return fmt.Errorf("refusing to remove %s: too close to the file system root", dir)
	}
	if err := os.RemoveAll(clean); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
