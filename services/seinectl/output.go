package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/nodecheck"
)

// Output formats, as kubectl's -o.
const (
	formatTable = "table"
	formatWide  = "wide"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

func checkFormat(f string, table bool) error {
	switch f {
	case formatJSON, formatYAML:
		return nil
	case formatTable, formatWide, "":
		if table {
			return nil
		}
	}
	return usageErr("output format %q: want table, wide, json or yaml", f)
}

// printStructured writes v as JSON or YAML.
func printStructured(w io.Writer, format string, v any) error {
	if format == formatJSON {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// printReport writes a check or node-prep report: a table (wide adds the
// target and whether the step changed the node) or the Report as JSON/YAML.
func printReport(w io.Writer, format string, r *nodecheck.Report) error {
	if format == formatJSON || format == formatYAML {
		return printStructured(w, format, r)
	}
	wide := format == formatWide
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if wide {
		fmt.Fprintln(tw, "CHECK\tSTATUS\tTARGET\tCHANGED\tDETAIL")
	} else {
		fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	}
	for _, res := range r.Results {
		status := "OK"
		if !res.OK {
			status = "FAIL"
		}
		if wide {
			changed := "-"
			if res.Changed {
				changed = "yes"
			}
			target := res.Target
			if target == "" {
				target = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.Name, status, target, changed, res.Detail)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", res.Name, status, res.Detail)
		}
	}
	return tw.Flush()
}
