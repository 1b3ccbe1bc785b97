package ovsdb

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"
)

// MapColumn names a string-to-string map column present on bridges and ports.
type MapColumn string

// The map columns callers may read and write.
const (
	ExternalIDs MapColumn = "external_ids"
	OtherConfig MapColumn = "other_config"
)

// changedKeys returns the entries of want whose key is absent from cur or has
// another value there.
func changedKeys(cur, want map[string]string) map[string]string {
	var out map[string]string
	for k, v := range want {
		if old, ok := cur[k]; !ok || old != v {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// mapHasAll reports whether every entry of want is in cur.
func mapHasAll(cur, want map[string]string) bool { return len(changedKeys(cur, want)) == 0 }

// mapSetMutations sets the entries of set in the map column field. OVSDB's map
// "insert" leaves existing keys alone, so the keys are deleted first; both
// mutations apply in order within one operation.
func mapSetMutations(field *map[string]string, set map[string]string) []model.Mutation {
	if len(set) == 0 {
		return nil
	}
	return []model.Mutation{
		{Field: field, Mutator: ovsdb.MutateOperationDelete, Value: slices.Sorted(maps.Keys(set))},
		{Field: field, Mutator: ovsdb.MutateOperationInsert, Value: maps.Clone(set)},
	}
}

func bridgeMapField(b *Bridge, col MapColumn) (*map[string]string, error) {
	switch col {
	case ExternalIDs:
		return &b.ExternalIDs, nil
	case OtherConfig:
		return &b.OtherConfig, nil
	}
	return nil, fmt.Errorf("unknown map column %q", col)
}

func portMapField(p *Port, col MapColumn) (*map[string]string, error) {
	switch col {
	case ExternalIDs:
		return &p.ExternalIDs, nil
	case OtherConfig:
		return &p.OtherConfig, nil
	}
	return nil, fmt.Errorf("unknown map column %q", col)
}

// BridgeMap returns a copy of the bridge's map column.
func (c *Client) BridgeMap(ctx context.Context, bridge string, col MapColumn) (map[string]string, error) {
	br, err := c.Bridge(ctx, bridge)
	if err != nil {
		return nil, err
	}
	f, err := bridgeMapField(&br, col)
	if err != nil {
		return nil, err
	}
	return maps.Clone(*f), nil
}

// SetBridgeMap sets the given keys of the bridge's map column; other keys stay.
func (c *Client) SetBridgeMap(ctx context.Context, bridge string, col MapColumn, kv map[string]string) error {
	return c.mutateBridgeMap(ctx, bridge, col, kv, nil)
}

// RemoveBridgeMapKeys deletes keys from the bridge's map column; absent keys
// are not an error.
func (c *Client) RemoveBridgeMapKeys(ctx context.Context, bridge string, col MapColumn, keys ...string) error {
	return c.mutateBridgeMap(ctx, bridge, col, nil, keys)
}

func (c *Client) mutateBridgeMap(ctx context.Context, bridge string, col MapColumn, set map[string]string, del []string) error {
	what := fmt.Sprintf("set %s of bridge %s", col, bridge)
	br, err := c.Bridge(ctx, bridge)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	cur, err := bridgeMapField(&br, col)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	row := &Bridge{UUID: br.UUID}
	field, _ := bridgeMapField(row, col)
	return c.mutateMap(ctx, what, *cur, row, field, set, del, func() (map[string]string, error) {
		return c.BridgeMap(ctx, bridge, col)
	})
}

// PortMap returns a copy of the port's map column.
func (c *Client) PortMap(ctx context.Context, port string, col MapColumn) (map[string]string, error) {
	p, err := c.port(ctx, port)
	if err != nil {
		return nil, err
	}
	f, err := portMapField(&p, col)
	if err != nil {
		return nil, err
	}
	return maps.Clone(*f), nil
}

// SetPortMap sets the given keys of the port's map column; other keys stay.
func (c *Client) SetPortMap(ctx context.Context, port string, col MapColumn, kv map[string]string) error {
	return c.mutatePortMap(ctx, port, col, kv, nil)
}

// RemovePortMapKeys deletes keys from the port's map column; absent keys are
// not an error.
func (c *Client) RemovePortMapKeys(ctx context.Context, port string, col MapColumn, keys ...string) error {
	return c.mutatePortMap(ctx, port, col, nil, keys)
}

func (c *Client) mutatePortMap(ctx context.Context, port string, col MapColumn, set map[string]string, del []string) error {
	what := fmt.Sprintf("set %s of port %s", col, port)
	p, err := c.port(ctx, port)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	cur, err := portMapField(&p, col)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	row := &Port{UUID: p.UUID}
	field, _ := portMapField(row, col)
	return c.mutateMap(ctx, what, *cur, row, field, set, del, func() (map[string]string, error) {
		return c.PortMap(ctx, port, col)
	})
}

// mutateMap sets and deletes keys of one map column (field, a column of row,
// whose current value is cur), in one transaction, and waits until reread
// shows the change in the cache. Keys already as wanted are left out; a
// change to nothing sends no transaction.
func (c *Client) mutateMap(ctx context.Context, what string, cur map[string]string, row model.Model, field *map[string]string,
	set map[string]string, del []string, reread func() (map[string]string, error)) error {
	set, del = changedKeys(cur, set), presentKeys(cur, del)
	if len(set) == 0 && len(del) == 0 {
		return nil
	}
	ops, err := c.ovs.Where(row).Mutate(row, mapMutations(field, set, del)...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := c.transact(ctx, what, ops); err != nil {
		return err
	}
	return c.waitFor(ctx, what+" in cache", func() (bool, error) {
		got, err := reread()
		return err == nil && mapHasAll(got, set) && len(presentKeys(got, del)) == 0, err
	})
}

// mapMutations sets the entries of set and deletes the keys del.
func mapMutations(field *map[string]string, set map[string]string, del []string) []model.Mutation {
	muts := mapSetMutations(field, set)
	if len(del) > 0 {
		muts = append(muts, model.Mutation{Field: field, Mutator: ovsdb.MutateOperationDelete, Value: slices.Clone(del)})
	}
	return muts
}

// presentKeys returns the keys that are in cur, sorted.
func presentKeys(cur map[string]string, keys []string) []string {
	var out []string
	for _, k := range keys {
		if _, ok := cur[k]; ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// OpenvSwitchOtherConfig returns a copy of other_config of the root
// Open_vSwitch row (ovs-vswitchd's global settings, e.g. hw-offload).
func (c *Client) OpenvSwitchOtherConfig(ctx context.Context) (map[string]string, error) {
	root, err := c.root(ctx)
	if err != nil {
		return nil, err
	}
	return maps.Clone(root.OtherConfig), nil
}

// SetOpenvSwitchOtherConfig sets the given keys of the root row's
// other_config; other keys stay. Some settings (hw-offload) take effect
// only when ovs-vswitchd restarts.
func (c *Client) SetOpenvSwitchOtherConfig(ctx context.Context, kv map[string]string) error {
	const what = "set other_config of Open_vSwitch"
	root, err := c.root(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	row := &OpenvSwitch{UUID: root.UUID}
	return c.mutateMap(ctx, what, root.OtherConfig, row, &row.OtherConfig, kv, nil, func() (map[string]string, error) {
		return c.OpenvSwitchOtherConfig(ctx)
	})
}
