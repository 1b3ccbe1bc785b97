package bundle

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestOVSDBWithoutVersion: a database whose ovs_version nobody set (the
// seine-ovs container's, on real nodes) still gives its bridges and ports;
// the missing version is said on its line and is the source's error.
func TestOVSDBWithoutVersion(t *testing.T) {
	d := ovsdaemon.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := d.Vsctl(ctx, "add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev",
		"--", "clear", "Open_vSwitch", ".", "ovs_version"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var buf bytes.Buffer
	err := OVSDB("ovs/ovsdb.txt", d.DBEndpoint(), nil).Collect(ctx, &buf)
	out := buf.String()
	if err == nil || !strings.Contains(err.Error(), "ovs_version is not set") {
		t.Errorf("error: %v, want ovs_version is not set", err)
	}
	for _, want := range []string{"ovs_version: (unknown)", "Bridge br-int", "datapath_type: netdev", "Port br-int"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}
