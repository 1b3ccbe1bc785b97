package proxier

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

// afterInstall does what follows a successful sync outside the locks:
// stale UDP conntrack entries are flushed and the health-check node ports
// follow their Services.
func (c *Controller) afterInstall(ctx context.Context, keys []string, olds, wants map[string]*proxy.Service) {
	if c.cfg.Conntrack != nil {
		for _, k := range keys {
			for _, s := range proxy.StaleUDPEntries(olds[k], wants[k]) {
				if err := c.flushUDP(ctx, s); err != nil {
					c.log.Warn("flushing stale UDP conntrack entries", "service", k, "entries", s.String(), "err", err)
				}
			}
		}
	}
	if hc := c.cfg.HealthChecks; hc != nil {
		for _, k := range keys {
			hc.Set(k, wants[k])
		}
	}
}

// flushUDP removes one set of stale UDP entries: in CtZone, the entries to
// the frontend (every node IP for a node port) DNATed to the endpoint; in
// SNATZone, those the proxy SNATed towards the endpoint.
func (c *Controller) flushUDP(ctx context.Context, s proxy.StaleUDP) error {
	var fronts []netip.AddrPort
	if s.Frontend.IsValid() {
		fronts = append(fronts, s.Frontend)
	} else {
		for _, ip := range c.nodeIPs() {
			fronts = append(fronts, netip.AddrPortFrom(ip, s.NodePort))
		}
		fronts = append(fronts, netip.AddrPortFrom(pipeline.NodePortVirtualIP, s.NodePort))
	}
	reply := ""
	if s.Endpoint.IsValid() {
		reply = fmt.Sprintf("ct_nw_src=%s,ct_tp_src=%d", s.Endpoint.Addr(), s.Endpoint.Port())
	}
	for _, f := range fronts {
		orig := fmt.Sprintf("ct_nw_proto=17,ct_nw_dst=%s,ct_tp_dst=%d", f.Addr(), f.Port())
		if err := c.cfg.Conntrack.FlushConntrack(ctx, pipeline.CtZone, orig, reply); err != nil {
			return err
		}
	}
	if s.Endpoint.IsValid() {
		orig := fmt.Sprintf("ct_nw_proto=17,ct_nw_dst=%s,ct_tp_dst=%d", s.Endpoint.Addr(), s.Endpoint.Port())
		if err := c.cfg.Conntrack.FlushConntrack(ctx, pipeline.SNATZone, orig, ""); err != nil {
			return err
		}
	}
	return nil
}

// nodeIPs are the node's addresses as the pipeline knows them.
func (c *Controller) nodeIPs() []netip.Addr {
	var ips []netip.Addr
	_ = c.node.Install(context.Background(), func(_ Writer, n *pipeline.NodeConfig, _ pipeline.Round) error {
		ips = append(ips, n.NodeIPs...)
		return nil
	})
	return ips
}

// sweepAffinity deletes learned affinity flows idle for longer than their
// Service's timeout when that timeout does not fit OpenFlow's 16-bit
// idle_timeout (those are learned without one).
func (c *Controller) sweepAffinity(ctx context.Context) error {
	c.instMu.Lock()
	long := map[uint64]uint32{}
	for _, in := range c.installed {
		for id, t := range in.affinity {
			if t > 0xffff {
				long[id] = t
			}
		}
	}
	c.instMu.Unlock()
	if len(long) == 0 {
		return nil
	}
	return c.node.Install(ctx, func(w Writer, _ *pipeline.NodeConfig, _ pipeline.Round) error {
		cookie, mask := uint64(pipeline.NewCookie(0, pipeline.CategoryAffinity, 0)), uint64(0xff)<<40
		stats, err := w.DumpFlows(ctx, uint8(pipeline.SessionAffinity), cookie, mask)
		if err != nil {
			return err
		}
		var dels []openflow.Message
		for _, s := range stats {
			t, ok := long[pipeline.Cookie(s.Flow.CookieValue()).ID()]
			if ok && s.IdleSec >= t {
				dels = append(dels, flowMod(openflow.FlowDeleteStrict, s.Flow))
			}
		}
		if len(dels) == 0 {
			return nil
		}
		c.log.Info("expired learned affinity", "flows", len(dels))
		return w.Bundle(ctx, dels...)
	})
}
