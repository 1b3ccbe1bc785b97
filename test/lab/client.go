package lab

import (
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func (c *Config) restConfig(who string) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath(who))
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = 100, 200
	return rc, nil
}

// Client returns a clientset with one of the lab's identities ("admin",
// "kube-controller-manager", a node name, ...).
func (c *Config) Client(who string) (kubernetes.Interface, error) {
	rc, err := c.restConfig(who)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// RESTConfig returns the client configuration of one of the lab's
// identities.
func (c *Config) RESTConfig(who string) (*rest.Config, error) { return c.restConfig(who) }
