package ovsdb

import "github.com/ovn-org/libovsdb/model"

// The models below are hand-written subsets of vswitch.ovsschema: only the
// columns Seine reads or writes are mapped, so the monitor does not stream the
// statistics columns ovs-vswitchd rewrites every few seconds. libovsdb checks
// each tagged field against the server's schema when it connects.
//
// Column types follow libovsdb's mapping: a scalar is a Go value, an optional
// scalar (min 0, max 1) a pointer, a set a slice, a map a map; references are
// UUID strings.

// Table names in the Open_vSwitch database.
const (
	DatabaseName       = "Open_vSwitch"
	OpenvSwitchTable   = "Open_vSwitch"
	BridgeTable        = "Bridge"
	PortTable          = "Port"
	InterfaceTable     = "Interface"
	defaultProtocol    = "OpenFlow15"
	defaultFailMode    = "secure"
	interfaceTypeInner = "internal"
)

// OpenvSwitch is the root row (exactly one exists).
type OpenvSwitch struct {
	UUID          string            `ovsdb:"_uuid"`
	Bridges       []string          `ovsdb:"bridges"`
	NextCfg       int               `ovsdb:"next_cfg"`
	CurCfg        int               `ovsdb:"cur_cfg"`
	OVSVersion    *string           `ovsdb:"ovs_version"`
	DBVersion     *string           `ovsdb:"db_version"`
	DatapathTypes []string          `ovsdb:"datapath_types"`
	IfaceTypes    []string          `ovsdb:"iface_types"`
	OtherConfig   map[string]string `ovsdb:"other_config"`
	ExternalIDs   map[string]string `ovsdb:"external_ids"`
}

// Bridge is a row of the Bridge table.
type Bridge struct {
	UUID         string            `ovsdb:"_uuid"`
	Name         string            `ovsdb:"name"`
	DatapathType string            `ovsdb:"datapath_type"`
	DatapathID   *string           `ovsdb:"datapath_id"`
	FailMode     *string           `ovsdb:"fail_mode"`
	Protocols    []string          `ovsdb:"protocols"`
	Ports        []string          `ovsdb:"ports"`
	OtherConfig  map[string]string `ovsdb:"other_config"`
	ExternalIDs  map[string]string `ovsdb:"external_ids"`
}

// Port is a row of the Port table. Seine's ports have exactly one interface,
// named like the port.
type Port struct {
	UUID        string            `ovsdb:"_uuid"`
	Name        string            `ovsdb:"name"`
	Interfaces  []string          `ovsdb:"interfaces"`
	Tag         *int              `ovsdb:"tag"`
	OtherConfig map[string]string `ovsdb:"other_config"`
	ExternalIDs map[string]string `ovsdb:"external_ids"`
}

// Interface is a row of the Interface table.
type Interface struct {
	UUID          string            `ovsdb:"_uuid"`
	Name          string            `ovsdb:"name"`
	Type          string            `ovsdb:"type"`
	Options       map[string]string `ovsdb:"options"`
	OFPort        *int              `ovsdb:"ofport"`
	OFPortRequest *int              `ovsdb:"ofport_request"`
	Error         *string           `ovsdb:"error"`
	MAC           *string           `ovsdb:"mac"`
	MACInUse      *string           `ovsdb:"mac_in_use"`
	MTU           *int              `ovsdb:"mtu"`
	MTURequest    *int              `ovsdb:"mtu_request"`
	AdminState    *string           `ovsdb:"admin_state"`
	LinkState     *string           `ovsdb:"link_state"`
	OtherConfig   map[string]string `ovsdb:"other_config"`
	ExternalIDs   map[string]string `ovsdb:"external_ids"`
}

// ClientDBModel is the libovsdb client model of the tables above.
func ClientDBModel() (model.ClientDBModel, error) {
	return model.NewClientDBModel(DatabaseName, map[string]model.Model{
		OpenvSwitchTable: &OpenvSwitch{},
		BridgeTable:      &Bridge{},
		PortTable:        &Port{},
		InterfaceTable:   &Interface{},
	})
}
