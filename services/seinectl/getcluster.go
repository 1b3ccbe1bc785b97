package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/jsonpath"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	statsv1 "github.com/seine-cni/seine/core/apis/stats/v1alpha1"
)

// clusterResource is an object kind `seinectl get` reads from the cluster:
// the names it answers to and its resource. Seine's kinds are known, so
// no discovery round trip is needed to find them.
type clusterResource struct {
	names      []string
	gvr        schema.GroupVersionResource
	namespaced bool
	what       string
}

var clusterResources = []clusterResource{
	{[]string{"agentinfo", "agentinfos", "seineagentinfo", "seineagentinfos"}, crd.SeineAgentInfosResource, false,
		"every node's agent: version, pods, policies, flows, connections (core/inventory)"},
	{[]string{"controllerinfo", "controllerinfos", "seinecontrollerinfo", "seinecontrollerinfos"}, crd.SeineControllerInfosResource, false,
		"seine-controller: version, connected agents, policies"},
	{[]string{"networkpolicy", "networkpolicies", "netpol"}, cp.SchemeGroupVersion.WithResource("networkpolicies"), false,
		"the controller's internal policies, of every kind, with their realization"},
	{[]string{"networkpolicystats", "netpolstats"}, statsv1.SchemeGroupVersion.WithResource("networkpolicystats"), true,
		"sessions, packets and bytes per Kubernetes NetworkPolicy (core/policystats)"},
	{[]string{"seinenetworkpolicystats"}, statsv1.SchemeGroupVersion.WithResource("seinenetworkpolicystats"), true,
		"the same per Seine NetworkPolicy"},
	{[]string{"seineclusternetworkpolicystats"}, statsv1.SchemeGroupVersion.WithResource("seineclusternetworkpolicystats"), false,
		"the same per Seine ClusterNetworkPolicy"},
	{[]string{"clusternetworkpolicystats"}, statsv1.SchemeGroupVersion.WithResource("clusternetworkpolicystats"), false,
		"the same per upstream ClusterNetworkPolicy"},
	{[]string{"traceflow", "traceflows", "tf"}, crd.TraceflowsResource, false,
		"Traceflows and their verdicts"},
}

// getResources are the first arguments `seinectl get` takes (completion).
func getResources() []string {
	r := []string{"pods", "flows"}
	for _, c := range clusterResources {
		r = append(r, c.names[0])
	}
	return r
}

func clusterResourceHelp() string {
	var b strings.Builder
	for _, c := range clusterResources {
		fmt.Fprintf(&b, "  %-31s %s (%s)\n", c.names[0], c.what, c.gvr.GroupResource())
	}
	return b.String()
}

// clusterGetOptions are `seinectl get`'s flags for cluster objects.
type clusterGetOptions struct {
	output, selector         string
	allNamespaces, noHeaders bool
}

// tableAccept asks the kube-apiserver (or seine-controller behind it) for
// the objects as a table, as kubectl get does, so the columns are the
// server's: a CRD's additionalPrinterColumns, the controller's
// TableConvertor.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

// getCluster prints the named objects of one cluster resource (all of
// them without names) with k8s.io/cli-runtime's printers: the server's
// table (-o wide: its wide columns too), or the objects as json, yaml,
// name or jsonpath, or custom columns.
func (c *cli) getCluster(ctx context.Context, what string, names []string, o clusterGetOptions) error {
	i := slices.IndexFunc(clusterResources, func(r clusterResource) bool { return slices.Contains(r.names, what) })
	if i < 0 {
		return usageErr("get: unknown resource %q (want one of %s)", what, strings.Join(getResources(), ", "))
	}
	cr := clusterResources[i]
	if len(names) > 0 && o.selector != "" {
		return usageErr("get: names and a selector (-l) cannot both be given")
	}
	table := o.output == "" || o.output == formatWide
	var printer printers.ResourcePrinter
	switch {
	case table:
		printer = printers.NewTablePrinter(printers.PrintOptions{Wide: o.output == formatWide, WithNamespace: cr.namespaced && o.allNamespaces, NoHeaders: o.noHeaders})
	case strings.HasPrefix(o.output, "custom-columns="):
		p, err := newColumnsPrinter(strings.TrimPrefix(o.output, "custom-columns="), o.noHeaders)
		if err != nil {
			return usageErr("get: %v", err)
		}
		printer = p
	default:
		p, err := objectPrinter(o.output)
		if err != nil {
			return usageErr("get: %v", err)
		}
		printer = p
	}
	rc, err := c.kube.restConfig()
	if err != nil {
		return err
	}
	if table {
		rc = rest.CopyConfig(rc)
		rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return acceptTable{rt} })
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = dyn.Resource(cr.gvr)
	ns := ""
	if cr.namespaced {
		if ns, err = c.kube.namespace(); err != nil {
			return err
		}
		if !o.allNamespaces {
			ri = dyn.Resource(cr.gvr).Namespace(ns)
		}
	}
	// Like kubectl: every name found is printed, every one missing is an
	// error after them.
	var objs []*unstructured.Unstructured
	var errs []error
	if len(names) == 0 {
		l, err := ri.List(ctx, metav1.ListOptions{LabelSelector: o.selector})
		if err != nil {
			return fmt.Errorf("list %s: %w", cr.gvr.GroupResource(), err)
		}
		if table {
			objs = append(objs, &unstructured.Unstructured{Object: l.Object})
		} else {
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
		}
	} else {
		for _, n := range names {
			u, err := ri.Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			objs = append(objs, u)
		}
	}
	if table {
		rows := 0
		for _, u := range objs {
			t, err := decodeTable(u)
			if err != nil {
				return errors.Join(append(errs, err)...)
			}
			rows += len(t.Rows)
			if err := printer.PrintObj(t, c.stdout); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		if rows == 0 && len(errs) == 0 {
			if cr.namespaced && !o.allNamespaces {
				fmt.Fprintf(c.stderr, "No resources found in %s namespace.\n", ns)
			} else {
				fmt.Fprintln(c.stderr, "No resources found")
			}
		}
		return errors.Join(errs...)
	}
	var out runtime.Object
	if len(objs) == 1 && len(names) == 1 {
		out = objs[0]
	} else {
		list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{}}}
		for _, u := range objs {
			list.Items = append(list.Items, *u)
		}
		out = list
	}
	if err := printer.PrintObj(out, c.stdout); err != nil {
		return errors.Join(append(errs, err)...)
	}
	return errors.Join(errs...)
}

// objectPrinter is cli-runtime's printer for an -o that prints the objects
// themselves. Not go-template: text/template's reflection keeps every
// exported method of every linked type alive, and seinectl would grow from
// 32 to 53 MB (stripped) for it; jsonpath covers the same uses.
func objectPrinter(format string) (printers.ResourcePrinter, error) {
	kind, arg, _ := strings.Cut(format, "=")
	switch kind {
	case formatJSON:
		return &printers.JSONPrinter{}, nil
	case formatYAML:
		return &printers.YAMLPrinter{}, nil
	case "name":
		return &printers.NamePrinter{}, nil
	case "jsonpath":
		if arg == "" {
			return nil, errors.New("-o jsonpath=TEMPLATE: no template")
		}
		p, err := printers.NewJSONPathPrinter(arg)
		if err != nil {
			return nil, fmt.Errorf("-o jsonpath: %w", err)
		}
		p.AllowMissingKeys(true)
		return p, nil
	}
	return nil, fmt.Errorf("output format %q: want wide, json, yaml, name, jsonpath=... or custom-columns=...", format)
}

// acceptTable asks for tables (the dynamic client would ask for JSON).
type acceptTable struct{ rt http.RoundTripper }

func (a acceptTable) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Accept", tableAccept)
	return a.rt.RoundTrip(r)
}

// decodeTable turns the server's answer (a Table, decoded as unstructured)
// into a metav1.Table whose rows carry their objects' metadata, which the
// table printer reads for the namespace column. A server that sent an
// object instead of a table (one without table support) gets an error.
func decodeTable(obj runtime.Object) (*metav1.Table, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetKind() != "Table" {
		return nil, fmt.Errorf("the server sent %s, not a table", obj.GetObjectKind().GroupVersionKind())
	}
	t := &metav1.Table{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, t); err != nil {
		return nil, fmt.Errorf("decode table: %w", err)
	}
	for i := range t.Rows {
		row := &t.Rows[i]
		if row.Object.Raw == nil || row.Object.Object != nil {
			continue
		}
		o, err := runtime.Decode(unstructured.UnstructuredJSONScheme, row.Object.Raw)
		if err != nil {
			return nil, fmt.Errorf("decode table row: %w", err)
		}
		row.Object.Object = o
	}
	return t, nil
}

// columnsPrinter is -o custom-columns=HEADER:JSONPATH,...: one column per
// path (client-go's JSONPath, as kubectl's), "<none>" where an object has
// no value.
type columnsPrinter struct {
	headers   []string
	paths     []*jsonpath.JSONPath
	noHeaders bool
}

func newColumnsPrinter(spec string, noHeaders bool) (*columnsPrinter, error) {
	p := &columnsPrinter{noHeaders: noHeaders}
	if spec == "" {
		return nil, errors.New("custom-columns: no columns (want HEADER:.path,...)")
	}
	for _, col := range strings.Split(spec, ",") {
		header, path, ok := strings.Cut(col, ":")
		if !ok || header == "" || path == "" {
			return nil, fmt.Errorf("custom-columns: %q is not HEADER:JSONPATH", col)
		}
		if !strings.HasPrefix(path, "{") {
			if !strings.HasPrefix(path, ".") {
				path = "." + path
			}
			path = "{" + path + "}"
		}
		jp := jsonpath.New(header).AllowMissingKeys(true)
		if err := jp.Parse(path); err != nil {
			return nil, fmt.Errorf("custom-columns: %s: %w", header, err)
		}
		p.headers = append(p.headers, header)
		p.paths = append(p.paths, jp)
	}
	return p, nil
}

func (p *columnsPrinter) PrintObj(obj runtime.Object, w io.Writer) error {
	var items []map[string]any
	switch o := obj.(type) {
	case *unstructured.UnstructuredList:
		for _, it := range o.Items {
			items = append(items, it.Object)
		}
	case *unstructured.Unstructured:
		items = append(items, o.Object)
	default:
		return fmt.Errorf("custom-columns: cannot print %T", obj)
	}
	tw := printers.GetNewTabWriter(w)
	if !p.noHeaders {
		fmt.Fprintln(tw, strings.Join(p.headers, "\t"))
	}
	for _, it := range items {
		cells := make([]string, len(p.paths))
		for i, jp := range p.paths {
			results, err := jp.FindResults(it)
			if err != nil {
				return fmt.Errorf("custom-columns: %s: %w", p.headers[i], err)
			}
			var vals []string
			for _, r := range results {
				for _, v := range r {
					vals = append(vals, fmt.Sprint(v.Interface()))
				}
			}
			cells[i] = strings.Join(vals, ",")
			if cells[i] == "" {
				cells[i] = "<none>"
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
