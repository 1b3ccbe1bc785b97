package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The controller's informers keep trimmed objects (see trimPod and the
// others), so they are registered in the shared factory under keys of their
// own: code asking the factory for the standard pod, namespace or policy
// informer gets whole objects, not these.
type (
	podsKey       struct{ corev1.Pod }
	namespacesKey struct{ corev1.Namespace }
	policiesKey   struct{ networkingv1.NetworkPolicy }
)

// trimmedInformers returns the pod, namespace and NetworkPolicy informers of
// the controller, registered in factory.
func trimmedInformers(factory informers.SharedInformerFactory) (pods, namespaces, policies cache.SharedIndexInformer) {
	pods = factory.InformerFor(&podsKey{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return newTrimmedInformer(cs, &podInfo{}, resync, trimPod,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, o)
			})
	})
	namespaces = factory.InformerFor(&namespacesKey{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return newTrimmedInformer(cs, &corev1.Namespace{}, resync, trimNamespace,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return cs.CoreV1().Namespaces().List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Namespaces().Watch(ctx, o)
			})
	})
	policies = factory.InformerFor(&policiesKey{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return newTrimmedInformer(cs, &networkingv1.NetworkPolicy{}, resync, trimPolicy,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return cs.NetworkingV1().NetworkPolicies(metav1.NamespaceAll).List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.NetworkingV1().NetworkPolicies(metav1.NamespaceAll).Watch(ctx, o)
			})
	})
	return pods, namespaces, policies
}

// newTrimmedInformer returns an informer of objType whose list and watch
// hand it objects already reduced by trim. A transform set on the informer
// would do the same work later: the reflector first copies every item of a
// list into a slice of its own, and the informer's queue holds the whole
// objects until each is transformed, so a cold start would hold a large
// list two or three times over. Here each list page is trimmed as soon as
// it arrives and can be dropped at once.
func newTrimmedInformer(client any, objType runtime.Object, resync time.Duration, trim func(runtime.Object) runtime.Object,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			l, err := list(ctx, o)
			if err != nil {
				return nil, err
			}
			return trimList(l, trim)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w, err := watchFn(ctx, o)
			if err != nil {
				return nil, err
			}
			return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
				if e.Type == watch.Error {
					return e, true
				}
				t := trim(e.Object)
				if e.Type == watch.Bookmark {
					// The end of a watch list's initial events is an
					// annotation of its bookmark.
					if from, err := meta.Accessor(e.Object); err == nil {
						if to, err := meta.Accessor(t); err == nil {
							to.SetAnnotations(from.GetAnnotations())
						}
					}
				}
				e.Object = t
				return e, true
			}), nil
		},
	}
	// Reflectors stream the initial state (watch list) where the client
	// supports it, and list where it does not (client-go's fake clientset).
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), objType, resync, cache.Indexers{})
}

// trimList returns the trimmed items of a list page with its list metadata.
func trimList(l runtime.Object, trim func(runtime.Object) runtime.Object) (runtime.Object, error) {
	lm, err := meta.ListAccessor(l)
	if err != nil {
		return nil, fmt.Errorf("list metadata: %w", err)
	}
	items, err := meta.ExtractList(l) // pointers into l: no copy
	if err != nil {
		return nil, fmt.Errorf("list items: %w", err)
	}
	out := &objectList{Items: make([]runtime.Object, len(items))}
	out.ResourceVersion, out.Continue, out.RemainingItemCount = lm.GetResourceVersion(), lm.GetContinue(), lm.GetRemainingItemCount()
	for i, o := range items {
		out.Items[i] = trim(o)
	}
	return out, nil
}

// objectList is a list page of trimmed objects. Its items are pointers, so
// the reflector takes them as they are instead of copying each.
type objectList struct {
	metav1.ListMeta
	Items []runtime.Object
}

func (l *objectList) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies the list, not its items: they are never modified.
func (l *objectList) DeepCopyObject() runtime.Object {
	c := &objectList{Items: append([]runtime.Object(nil), l.Items...)}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	return c
}
