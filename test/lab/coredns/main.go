// Command coredns is CoreDNS with the plugins a cluster DNS uses and no
// others (CoreDNS's way of choosing plugins at compile time: a main that
// imports them and sets the directives in plugin.cfg's order). Leaving out
// the cloud plugins (route53, azure, clouddns, ...) and their SDKs makes the
// lab's first build minutes shorter.
package main

import (
	"fmt"
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metadata"
	_ "github.com/coredns/coredns/plugin/metrics" // the "prometheus" directive
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives are the imported plugins in the order of CoreDNS's plugin.cfg
// (v1.15.0), which is the order a query passes them.
var directives = []string{
	"metadata", "reload", "ready", "health", "prometheus", "errors", "log",
	"loadbalance", "rewrite", "cache", "template", "hosts", "kubernetes",
	"loop", "forward", "whoami",
}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(1)
	}
	coremain.Run()
}
