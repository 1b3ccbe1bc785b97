package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/controller"
)

// supportBundle is the controller's part of a cluster support bundle
// (core/supportbundle collects it at bundle.Path): its recent log, how
// many objects it computed, its heap and goroutine profiles. The computed
// objects themselves the collector reads through the kube-apiserver
// (controlplane.seine.io).
func supportBundle(ctrl *controller.Controller, recent *bundle.LogRing) http.Handler {
	return bundle.Handler(func(since time.Time) []bundle.Source {
		srcs := []bundle.Source{
			bundle.Log("log.txt", recent, since),
			{Name: "state.txt", Collect: func(_ context.Context, w io.Writer) error {
				fmt.Fprintf(w, "computed: %d networkpolicies (version %d), %d appliedtogroups (version %d), %d addressgroups (version %d)\nidle: %v\n",
					ctrl.NetworkPolicies.Len(), ctrl.NetworkPolicies.Version(),
					ctrl.AppliedToGroups.Len(), ctrl.AppliedToGroups.Version(),
					ctrl.AddressGroups.Len(), ctrl.AddressGroups.Version(), ctrl.Idle())
				return nil
			}},
		}
		return append(srcs, bundle.Profiles("pprof")...)
	}, bundle.Options{})
}
