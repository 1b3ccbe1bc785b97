package ovsdb

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"

	"github.com/seine-cni/seine/test/ci"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Endpoint
		wantErr string
		unsupp  bool
	}{
		{in: "unix:/run/openvswitch/db.sock", want: Endpoint{"unix", "/run/openvswitch/db.sock"}},
		{in: "tcp:127.0.0.1:6640", want: Endpoint{"tcp", "127.0.0.1:6640"}},
		{in: "tcp:[::1]:6640", want: Endpoint{"tcp", "[::1]:6640"}},
		{in: "unix:db.sock", wantErr: "must be absolute"},
		{in: "tcp:127.0.0.1", wantErr: "want tcp:<host>:<port>"},
		{in: "tcp::6640", wantErr: "want tcp:<host>:<port>"},
		{in: "/run/db.sock", wantErr: "want unix:<path>"},
		{in: "http://x", wantErr: "unknown scheme"},
		{in: "ssl:127.0.0.1:6640", unsupp: true},
	} {
		got, err := ParseEndpoint(tc.in)
		switch {
		case tc.unsupp:
			if !errors.Is(err, errors.ErrUnsupported) {
				t.Errorf("ParseEndpoint(%q) = %v, want ErrUnsupported", tc.in, err)
			}
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseEndpoint(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
		default:
			if err != nil || got != tc.want {
				t.Errorf("ParseEndpoint(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in {
				t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
			}
		}
	}
}

func TestTunnelOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     InterfaceType
		tun     TunnelConfig
		want    map[string]string
		wantErr string
	}{
		{name: "defaults", typ: TypeGeneve, want: map[string]string{"remote_ip": "flow"}},
		{name: "flow everything", typ: TypeGeneve,
			tun:  TunnelConfig{RemoteIP: "flow", Key: "flow", LocalIP: "flow", Csum: true, DstPort: 6082},
			want: map[string]string{"remote_ip": "flow", "key": "flow", "local_ip": "flow", "csum": "true", "dst_port": "6082"}},
		{name: "fixed", typ: TypeVXLAN, tun: TunnelConfig{RemoteIP: "192.0.2.1", LocalIP: "fd00::1", Key: "0x10"},
			want: map[string]string{"remote_ip": "192.0.2.1", "local_ip": "fd00::1", "key": "0x10"}},
		{name: "bad remote", typ: TypeGeneve, tun: TunnelConfig{RemoteIP: "node1"}, wantErr: "remote_ip"},
		{name: "bad local", typ: TypeGeneve, tun: TunnelConfig{LocalIP: "x"}, wantErr: "local_ip"},
		{name: "bad key", typ: TypeGeneve, tun: TunnelConfig{Key: "vni"}, wantErr: "key"},
		{name: "gre port", typ: TypeGRE, tun: TunnelConfig{DstPort: 1}, wantErr: "GRE has no UDP port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.tun.options(tc.typ)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("options = %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !maps.Equal(got, tc.want) {
				t.Fatalf("options = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestInterfaceRow(t *testing.T) {
	ten := 10
	got, err := PortConfig{Name: "tun0", Type: TypeGeneve, Tunnel: &TunnelConfig{Key: "flow"},
		Options: map[string]string{"tos": "inherit"}, OFPortRequest: 10}.interfaceRow()
	want := Interface{Name: "tun0", Type: "geneve", OFPortRequest: &ten,
		Options: map[string]string{"remote_ip": "flow", "key": "flow", "tos": "inherit"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("interfaceRow = %+v, %v; want %+v", got, err, want)
	}
	for _, tc := range []struct {
		p       PortConfig
		wantErr string
	}{
		{PortConfig{}, "name is empty"},
		{PortConfig{Name: "t", Type: TypeVXLAN}, "needs a TunnelConfig"},
		{PortConfig{Name: "p", Type: TypeInternal, Tunnel: &TunnelConfig{}}, "tunnel options"},
		{PortConfig{Name: "p", Type: "patch"}, "unsupported interface type"},
		{PortConfig{Name: "p", OFPortRequest: 65280}, "out of range"},
		{PortConfig{Name: "p", MTURequest: -1}, "mtu_request"},
	} {
		if _, err := tc.p.interfaceRow(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("interfaceRow(%+v) = %v, want error containing %q", tc.p, err, tc.wantErr)
		}
	}
}

func TestInterfaceChanges(t *testing.T) {
	one, two := 1, 2
	cur := Interface{Type: "geneve", Options: map[string]string{"remote_ip": "flow"}, OFPortRequest: &one}
	same := Interface{Type: "geneve", Options: map[string]string{"remote_ip": "flow"}, OFPortRequest: &one}
	if f := interfaceChanges(&cur, &same); len(f) != 0 {
		t.Errorf("identical rows: %d changed fields", len(f))
	}
	want := Interface{Type: "vxlan", Options: map[string]string{"remote_ip": "flow", "key": "flow"}, OFPortRequest: &two, MTURequest: &two}
	f := interfaceChanges(&cur, &want)
	wantFields := []any{&want.Type, &want.Options, &want.OFPortRequest, &want.MTURequest}
	if !reflect.DeepEqual(f, wantFields) {
		t.Errorf("changed fields = %v, want all four", f)
	}
	// Clearing ofport_request is a change too.
	cleared := Interface{Type: "geneve", Options: map[string]string{"remote_ip": "flow"}}
	if f := interfaceChanges(&cur, &cleared); len(f) != 1 || f[0] != &cleared.OFPortRequest {
		t.Errorf("clearing ofport_request: fields %v", f)
	}
}

func TestBridgeNormalizedAndDiff(t *testing.T) {
	cfg, err := BridgeConfig{Name: "br-int", Protocols: []string{"OpenFlow15", "OpenFlow13"}}.normalized()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DatapathType != DatapathSystem || cfg.FailMode != "secure" || !reflect.DeepEqual(cfg.Protocols, []string{"OpenFlow13", "OpenFlow15"}) {
		t.Errorf("normalized = %+v", cfg)
	}
	for _, bad := range []BridgeConfig{{}, {Name: "b", DatapathType: "dpdk"}, {Name: "b", FailMode: "open"}} {
		if _, err := bad.normalized(); err == nil {
			t.Errorf("normalized(%+v) accepted", bad)
		}
	}

	secure := "secure"
	br := Bridge{Name: "br-int", DatapathType: "", FailMode: &secure, Protocols: []string{"OpenFlow15", "OpenFlow13"},
		ExternalIDs: map[string]string{"a": "1", "other": "x"}}
	cfg.ExternalIDs = map[string]string{"a": "1"}
	if ch := diffBridge(br, cfg); !ch.empty() {
		t.Errorf("diff of an equal bridge (\"\" datapath = system, protocol order) = %+v", ch)
	}
	cfg.DatapathType, cfg.FailMode = DatapathNetdev, "standalone"
	cfg.OtherConfig = map[string]string{"hwaddr": "aa:bb:cc:dd:ee:ff"}
	cfg.ExternalIDs = map[string]string{"a": "2", "b": "3"}
	ch := diffBridge(br, cfg)
	want := bridgeChanges{datapathType: true, failMode: true,
		otherConfig: map[string]string{"hwaddr": "aa:bb:cc:dd:ee:ff"}, externalIDs: map[string]string{"a": "2", "b": "3"}}
	if !reflect.DeepEqual(ch, want) {
		t.Errorf("diff = %+v, want %+v", ch, want)
	}
}

func TestMapHelpers(t *testing.T) {
	cur := map[string]string{"a": "1", "b": "2"}
	if got := changedKeys(cur, map[string]string{"a": "1", "b": "3", "c": "4"}); !maps.Equal(got, map[string]string{"b": "3", "c": "4"}) {
		t.Errorf("changedKeys = %v", got)
	}
	if got := changedKeys(cur, map[string]string{"a": "1"}); got != nil {
		t.Errorf("changedKeys of a subset = %v, want nil", got)
	}
	if got := presentKeys(cur, []string{"c", "b", "a", "b"}); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("presentKeys = %v", got)
	}
	var field map[string]string
	muts := mapMutations(&field, map[string]string{"y": "2", "x": "1"}, []string{"z"})
	want := []model.Mutation{
		{Field: &field, Mutator: ovsdb.MutateOperationDelete, Value: []string{"x", "y"}},
		{Field: &field, Mutator: ovsdb.MutateOperationInsert, Value: map[string]string{"x": "1", "y": "2"}},
		{Field: &field, Mutator: ovsdb.MutateOperationDelete, Value: []string{"z"}},
	}
	if !reflect.DeepEqual(muts, want) {
		t.Errorf("mapMutations = %+v, want %+v", muts, want)
	}
	if muts := mapMutations(&field, nil, nil); len(muts) != 0 {
		t.Errorf("mapMutations of nothing = %v", muts)
	}
}

func TestInterfaceError(t *testing.T) {
	err := error(&InterfaceError{Interface: "eth9", Text: "could not open network device eth9 (No such device)"})
	if got := err.Error(); got != "interface eth9: ovs-vswitchd could not add it: could not open network device eth9 (No such device)" {
		t.Errorf("Error() = %q", got)
	}
	var ie *InterfaceError
	if !errors.As(fmtWrap(err), &ie) || ie.Interface != "eth9" {
		t.Errorf("errors.As through a wrap failed")
	}
}

func fmtWrap(err error) error { return errors.Join(errors.New("ctx"), err) }

func TestClientDBModel(t *testing.T) {
	m, err := ClientDBModel()
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "Open_vSwitch" {
		t.Errorf("model name %q", m.Name())
	}
}

// TestModelsMatchSchema checks the hand-written models against the schema OVS
// installs, as libovsdb does when it connects.
func TestModelsMatchSchema(t *testing.T) {
	const path = "/usr/share/openvswitch/vswitch.ovsschema"
	b, err := os.ReadFile(path)
	if err != nil {
		ci.Skipf(t, "OVS schema not installed (%v); Debian: apt-get install openvswitch-common", err)
	}
	var schema ovsdb.DatabaseSchema
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	m, err := ClientDBModel()
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := model.NewDatabaseModel(schema, m); len(errs) > 0 {
		t.Fatalf("models do not match %s: %v", path, errs)
	}
}
