package netpolapi

import (
	"embed"
	"flag"
	"regexp"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	api "sigs.k8s.io/network-policy-api/apis/v1beta1"
	"sigs.k8s.io/network-policy-api/conformance/tests"
	"sigs.k8s.io/network-policy-api/conformance/utils/flags"
	"sigs.k8s.io/network-policy-api/conformance/utils/suite"
)

// manifests is the module's conformance/base, as the build copied it here
// (base/manifests.yaml without the SCTP servers; every other file as is).
//
//go:embed base
var manifests embed.FS

// skip: the tests the runner's selection does not run (selection.txt's
// skip rules, joined); they are reported as skipped, with the rule's reason
// in the runner's table.
var skip = flag.String("seine.skip", "", "regex of the tests not to run (matched against the test's short name)")

// TestConformance runs upstream's conformance tests as its own
// TestConformance does (a controller-runtime client from KUBECONFIG, the
// suite's flags: -supported-features, -exempt-features, -all-features,
// -cleanup-base-resources, -debug), on the manifests above.
func TestConformance(t *testing.T) {
	var skipRe *regexp.Regexp
	if *skip != "" {
		var err error
		if skipRe, err = regexp.Compile(*skip); err != nil {
			t.Fatalf("-seine.skip: %v", err)
		}
	}
	cfg, err := config.GetConfig()
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	if err := api.Install(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	s := suite.New(suite.Options{
		Client:                     c,
		ClientSet:                  cs,
		KubeConfig:                 *cfg,
		Debug:                      *flags.ShowDebug,
		CleanupBaseResources:       *flags.CleanupBaseResources,
		SupportedFeatures:          suite.ParseSupportedFeatures(*flags.SupportedFeatures),
		ExemptFeatures:             suite.ParseSupportedFeatures(*flags.ExemptFeatures),
		EnableAllSupportedFeatures: *flags.EnableAllSupportedFeatures,
		FS:                         &manifests,
	})
	s.Setup(t)
	var run []suite.ConformanceTest
	for _, ct := range tests.ConformanceTests {
		if skipRe != nil && skipRe.MatchString(ct.ShortName) {
			t.Run(ct.ShortName, func(t *testing.T) { t.Skip("skipped by the runner's selection (selection.txt)") })
			continue
		}
		run = append(run, ct)
	}
	s.Run(t, run)
}
