package apiserver

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

func controlplaneResource(resource string) schema.GroupResource { return cp.Resource(resource) }

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: cp.SchemeGroupVersion.String(), Kind: kind}
}

var networkPolicyKind = kind[*cp.NetworkPolicy]{
	resource: "networkpolicies", singular: "networkpolicy",
	newObj:  func() runtime.Object { return &cp.NetworkPolicy{} },
	newList: func() runtime.Object { return &cp.NetworkPolicyList{} },
	stamp: func(o *cp.NetworkPolicy, rv string) *cp.NetworkPolicy {
		c := *o
		c.ResourceVersion = rv
		return &c
	},
	list: func(objs []*cp.NetworkPolicy, rv string) runtime.Object {
		l := &cp.NetworkPolicyList{Items: make([]cp.NetworkPolicy, len(objs))}
		for i, o := range objs {
			l.Items[i] = *o
		}
		l.ResourceVersion = rv
		return l
	},
	tiered: func(o *cp.NetworkPolicy) bool { return o.TierPriority != nil },
}

var appliedToGroupKind = kind[*cp.AppliedToGroup]{
	resource: "appliedtogroups", singular: "appliedtogroup",
	newObj:  func() runtime.Object { return &cp.AppliedToGroup{} },
	newList: func() runtime.Object { return &cp.AppliedToGroupList{} },
	stamp: func(o *cp.AppliedToGroup, rv string) *cp.AppliedToGroup {
		c := *o
		c.ResourceVersion = rv
		return &c
	},
	list: func(objs []*cp.AppliedToGroup, rv string) runtime.Object {
		l := &cp.AppliedToGroupList{Items: make([]cp.AppliedToGroup, len(objs))}
		for i, o := range objs {
			l.Items[i] = *o
		}
		l.ResourceVersion = rv
		return l
	},
	patch: func(old, new *cp.AppliedToGroup, rv string) runtime.Object {
		p := &cp.AppliedToGroupPatch{TypeMeta: typeMeta("AppliedToGroupPatch")}
		p.Name, p.ResourceVersion = new.Name, rv
		p.AddedMembers, p.RemovedMembers = diffMembers(old.Members, new.Members)
		return p
	},
}

var addressGroupKind = kind[*cp.AddressGroup]{
	resource: "addressgroups", singular: "addressgroup",
	newObj:  func() runtime.Object { return &cp.AddressGroup{} },
	newList: func() runtime.Object { return &cp.AddressGroupList{} },
	stamp: func(o *cp.AddressGroup, rv string) *cp.AddressGroup {
		c := *o
		c.ResourceVersion = rv
		return &c
	},
	list: func(objs []*cp.AddressGroup, rv string) runtime.Object {
		l := &cp.AddressGroupList{Items: make([]cp.AddressGroup, len(objs))}
		for i, o := range objs {
			l.Items[i] = *o
		}
		l.ResourceVersion = rv
		return l
	},
	patch: func(old, new *cp.AddressGroup, rv string) runtime.Object {
		p := &cp.AddressGroupPatch{TypeMeta: typeMeta("AddressGroupPatch")}
		p.Name, p.ResourceVersion = new.Name, rv
		p.AddedMembers, p.RemovedMembers = diffMembers(old.Members, new.Members)
		return p
	},
}

// diffMembers returns the members of new not in old and those of old not
// in new.
func diffMembers(old, new []cp.GroupMember) (added, removed []cp.GroupMember) {
	had := make(map[string]struct{}, len(old))
	for i := range old {
		had[cp.MemberKey(&old[i])] = struct{}{}
	}
	for i := range new {
		k := cp.MemberKey(&new[i])
		if _, ok := had[k]; ok {
			delete(had, k)
			continue
		}
		added = append(added, new[i])
	}
	for i := range old {
		if _, ok := had[cp.MemberKey(&old[i])]; ok {
			removed = append(removed, old[i])
		}
	}
	return added, removed
}

// shallowCopy returns a copy of an event's object for one watcher. The
// objects of a change are shared by all watchers, and the apiserver's
// encoder sets and then restores the apiVersion and kind of the object it
// encodes: watchers encoding one object at once would race on them.
func shallowCopy(obj runtime.Object) runtime.Object {
	switch o := obj.(type) {
	case *cp.NetworkPolicy:
		c := *o
		return &c
	case *cp.AppliedToGroup:
		c := *o
		return &c
	case *cp.AddressGroup:
		c := *o
		return &c
	case *cp.AppliedToGroupPatch:
		c := *o
		return &c
	case *cp.AddressGroupPatch:
		c := *o
		return &c
	}
	return obj
}
