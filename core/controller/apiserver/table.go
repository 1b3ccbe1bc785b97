package apiserver

import (
	"context"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// networkPolicyTable is what `kubectl get networkpolicies.controlplane.seine.io`
// shows: the internal name, the user's policy, and how far its generation
// is realized. Objects without status (watch events) show empty counts.
type networkPolicyTable struct{}

var networkPolicyColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "Name of the internal policy (the source policy's UID)."},
	{Name: "Source", Type: "string", Description: "Namespace/name of the Kubernetes NetworkPolicy it comes from."},
	{Name: "Generation", Type: "integer", Description: "The source policy's generation."},
	{Name: "Desired", Type: "string", Description: "Nodes in the policy's span."},
	{Name: "Realized", Type: "string", Description: "Span nodes that reported this generation realized."},
	{Name: "Phase", Type: "string", Description: "Realizing, Realized or Failed."},
}

func (networkPolicyTable) ConvertToTable(_ context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return convertToTable(obj, opts, networkPolicyColumns, func(o runtime.Object) []any {
		np, ok := o.(*cp.NetworkPolicy)
		if !ok {
			return nil
		}
		source := ""
		if np.SourceRef != nil {
			source = np.SourceRef.Namespace + "/" + np.SourceRef.Name
		}
		desired, realized, phase := "", "", ""
		if st := np.Status; st != nil {
			desired, realized, phase = itoa(st.DesiredNodes), itoa(st.RealizedNodes), string(st.Phase)
		}
		return []any{np.Name, source, np.Generation, desired, realized, phase}
	})
}

func itoa(n int32) string { return strconv.FormatInt(int64(n), 10) }

// nodePolicyStatusTable is what `kubectl get nodepolicystatuses` shows: per
// node, how many policies it reported, how many with an error, and how
// long ago it last reported.
type nodePolicyStatusTable struct{}

var nodePolicyStatusColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "The node."},
	{Name: "Policies", Type: "integer", Description: "Policies in the node's last report."},
	{Name: "Failed", Type: "integer", Description: "Of those, policies the node could not enforce (an invalid rule, or flows not installed)."},
	{Name: "Reported", Type: "string", Description: "Time since the node's last report."},
}

func (nodePolicyStatusTable) ConvertToTable(_ context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return convertToTable(obj, opts, nodePolicyStatusColumns, func(o runtime.Object) []any {
		st, ok := o.(*cp.NodePolicyStatus)
		if !ok {
			return nil
		}
		failed := 0
		for _, p := range st.Policies {
			if p.Error != "" {
				failed++
			}
		}
		return []any{st.Name, len(st.Policies), failed, duration.HumanDuration(time.Since(st.CreationTimestamp.Time)) + " ago"}
	})
}

// convertToTable renders obj, one object or a list, as a table with a row
// of cells per object (cells returns nil for an object of another type),
// and the columns unless opts asks for no headers.
func convertToTable(obj, opts runtime.Object, columns []metav1.TableColumnDefinition, cells func(runtime.Object) []any) (*metav1.Table, error) {
	t := &metav1.Table{}
	row := func(o runtime.Object) error {
		if c := cells(o); c != nil {
			t.Rows = append(t.Rows, metav1.TableRow{Cells: c, Object: runtime.RawExtension{Object: o}})
		}
		return nil
	}
	if meta.IsListType(obj) {
		if err := meta.EachListItem(obj, row); err != nil {
			return nil, err
		}
	} else if err := row(obj); err != nil {
		return nil, err
	}
	if l, err := meta.ListAccessor(obj); err == nil {
		t.ResourceVersion = l.GetResourceVersion()
	} else if m, err := meta.CommonAccessor(obj); err == nil {
		t.ResourceVersion = m.GetResourceVersion()
	}
	if o, ok := opts.(*metav1.TableOptions); !ok || !o.NoHeaders {
		t.ColumnDefinitions = columns
	}
	return t, nil
}
