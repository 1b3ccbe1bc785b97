package controller

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

func testPod(name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: "5", Labels: map[string]string{"app": name},
			Annotations: map[string]string{"big": "dropped"}},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "i"}}},
		Status: corev1.PodStatus{PodIP: ip},
	}
}

// The informer stores trimmed pods whether it lists (the fake clientset) or
// streams the initial state as a watch list (a real kube-apiserver): then
// its bookmark must keep the annotation that ends the initial events, or
// the informer never syncs.
func TestTrimmedInformerListsAndStreams(t *testing.T) {
	for _, tc := range []struct {
		name      string
		watchList bool
	}{{"list", false}, {"watch list", true}} {
		t.Run(tc.name, func(t *testing.T) {
			fw := watch.NewFakeWithChanSize(4, false)
			listed := false
			list := func(context.Context, metav1.ListOptions) (runtime.Object, error) {
				if tc.watchList {
					return nil, errors.New("a watch list must not list")
				}
				listed = true
				return &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "5"}, Items: []corev1.Pod{*testPod("a", "10.0.0.1")}}, nil
			}
			watchFn := func(_ context.Context, o metav1.ListOptions) (watch.Interface, error) {
				if tc.watchList {
					if o.SendInitialEvents == nil || !*o.SendInitialEvents {
						return nil, errors.New("expected a watch list")
					}
					fw.Add(testPod("a", "10.0.0.1"))
					bm := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "5",
						Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
					fw.Action(watch.Bookmark, bm)
				}
				return fw, nil
			}
			var client any = watchListLess{}
			if tc.watchList {
				client = nil // no marker: watch lists are used
			}
			inf := newTrimmedInformer(client, &podInfo{}, 0, trimPod, list, watchFn)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go inf.RunWithContext(ctx)
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			if !cache.WaitForCacheSync(sctx.Done(), inf.HasSynced) {
				t.Fatal("informer did not sync")
			}
			if listed == tc.watchList {
				t.Errorf("listed = %v with watch list %v", listed, tc.watchList)
			}
			o, ok, err := inf.GetStore().GetByKey("ns/a")
			if err != nil || !ok {
				t.Fatalf("pod ns/a not in the store: %v", err)
			}
			p, ok := o.(*podInfo)
			if !ok {
				t.Fatalf("stored %T, want *podInfo", o)
			}
			if p.nodeName != "n1" || len(p.ips) != 1 || p.Annotations != nil || p.Labels["app"] != "a" {
				t.Errorf("trimmed pod = %+v", p)
			}
			// Later events are trimmed too.
			fw.Modify(testPod("a", "10.0.0.2"))
			deadline := time.Now().Add(10 * time.Second)
			for {
				o, _, _ := inf.GetStore().GetByKey("ns/a")
				if p := o.(*podInfo); net.IP(p.ips[0]).String() == "10.0.0.2" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the modified pod never reached the store")
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// watchListLess marks a client without watch-list support, as client-go's
// fake clientset does.
type watchListLess struct{}

func (watchListLess) IsWatchListSemanticsUnSupported() bool { return true }
