package manifest

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// NodePrepArgs is the init container's command line: seinectl node-prep
// renders the node's agent configuration from the ConfigMap's template,
// creates the directories the agent and the runtime need, and installs
// seine-cni as the "seine" CNI plugin.
var NodePrepArgs = []string{
	imageBinDir + "/seinectl", "node-prep",
	"--node-name=$(NODE_NAME)",
	"--config-template=" + templateDir + "/" + agentConfigKey,
	"--config=" + renderedConfig,
	"--cni-bin-dir=" + containerCNIBin,
	"--install-cni=" + imageBinDir + "/seine-cni",
}

type hostVolume struct {
	name, hostPath, mountPath string
	typ                       corev1.HostPathType
	readOnly                  bool
	propagation               *corev1.MountPropagationMode
}

var (
	volRun    = hostVolume{name: "host-run-seine", hostPath: hostRunDir, mountPath: hostRunDir, typ: corev1.HostPathDirectoryOrCreate}
	volState  = hostVolume{name: "host-state", hostPath: hostStateDir, mountPath: hostStateDir, typ: corev1.HostPathDirectoryOrCreate}
	volCNIBin = hostVolume{name: "host-cni-bin", hostPath: hostCNIBinDir, mountPath: containerCNIBin, typ: corev1.HostPathDirectoryOrCreate}
	// The agent container sees the installed plugin, read-only, so that
	// `seinectl check` run in it finds it.
	volCNIBinRO = hostVolume{name: volCNIBin.name, hostPath: hostCNIBinDir, mountPath: containerCNIBin, readOnly: true}
	volCNIConf  = hostVolume{name: "host-cni-conf", hostPath: hostCNIConfDir, mountPath: containerCNIConf, typ: corev1.HostPathDirectoryOrCreate}
	// Open vSwitch's sockets: seine-ovs creates them, the agent waits for
	// them (either pod may start first).
	volOVS    = hostVolume{name: "host-ovs-run", hostPath: hostOVSRunDir, mountPath: hostOVSRunDir, typ: corev1.HostPathDirectoryOrCreate}
	volOVSDB  = hostVolume{name: "host-ovs-db", hostPath: hostOVSDBDir, mountPath: hostOVSDBDir, typ: corev1.HostPathDirectoryOrCreate}
	volOVSLog = hostVolume{name: "host-ovs-log", hostPath: hostOVSLogDir, mountPath: hostOVSLogDir, typ: corev1.HostPathDirectoryOrCreate}
	// The policy audit log, kept on the node (rotated by the agent).
	volSeineLog = hostVolume{name: "host-seine-log", hostPath: hostSeineLogDir, mountPath: hostSeineLogDir, typ: corev1.HostPathDirectoryOrCreate}
	volNetNS    = hostVolume{name: "host-netns", hostPath: "/var/run/netns", mountPath: "/var/run/netns", typ: corev1.HostPathDirectoryOrCreate, propagation: ptr.To(corev1.MountPropagationHostToContainer)}
	volXtables  = hostVolume{name: "xtables-lock", hostPath: "/run/xtables.lock", mountPath: "/run/xtables.lock", typ: corev1.HostPathFileOrCreate}
	// The kernel's modules, for loading openvswitch (kernel datapath). A
	// node without them (the userspace datapath, a kernel without
	// modules) still runs Open vSwitch: DirectoryOrCreate, not Directory.
	volModules = hostVolume{name: "host-lib-modules", hostPath: "/lib/modules", mountPath: "/lib/modules", typ: corev1.HostPathDirectoryOrCreate, readOnly: true}
)

func (v hostVolume) volume() corev1.Volume {
	return corev1.Volume{Name: v.name, VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: v.hostPath, Type: ptr.To(v.typ)},
	}}
}

func (v hostVolume) mount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: v.name, MountPath: v.mountPath, ReadOnly: v.readOnly, MountPropagation: v.propagation}
}

func mounts(vs ...hostVolume) []corev1.VolumeMount {
	out := make([]corev1.VolumeMount, len(vs))
	for i, v := range vs {
		out[i] = v.mount()
	}
	return out
}

func agentDaemonSet(o Options) *appsv1.DaemonSet {
	volumes := []corev1.Volume{{
		Name: configMapName,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: configMapName},
		}},
	}}
	for _, v := range []hostVolume{volRun, volState, volCNIBin, volCNIConf, volOVS, volNetNS, volXtables, volSeineLog} {
		volumes = append(volumes, v.volume())
	}
	probe := func(path string, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Host: "127.0.0.1", Path: path, Port: intstr.FromInt32(AgentHealthPort),
			}},
			PeriodSeconds: 10, FailureThreshold: failures,
		}
	}
	privileged := &corev1.SecurityContext{Privileged: ptr.To(true)}
	nodePrep := corev1.Container{
		Name:    "node-prep",
		Image:   o.image(),
		Command: NodePrepArgs,
		Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"},
		}}},
		// volOVS: node-prep checks that Open vSwitch's run directory
		// exists (seine-ovs's sockets appear in it; either pod may start
		// first, and DirectoryOrCreate makes it for whichever does).
		VolumeMounts: append([]corev1.VolumeMount{{Name: configMapName, MountPath: templateDir, ReadOnly: true}},
			mounts(volRun, volState, volCNIBin, volCNIConf, volOVS)...),
		SecurityContext: privileged,
	}
	agent := corev1.Container{
		Name:            agentName,
		Image:           o.image(),
		Command:         []string{imageBinDir + "/" + agentName, "run", "--config=" + renderedConfig},
		VolumeMounts:    mounts(volRun, volState, volCNIConf, volCNIBinRO, volOVS, volNetNS, volXtables, volSeineLog),
		SecurityContext: privileged,
		ReadinessProbe:  probe("/readyz", 3),
		LivenessProbe:   probe("/healthz", 5),
		Resources:       resources("200m", "100Mi"),
	}
	return &appsv1.DaemonSet{
		TypeMeta:   typeMeta("apps/v1", "DaemonSet"),
		ObjectMeta: meta(agentName, true, agentName),
		Spec: appsv1.DaemonSetSpec{
			Selector: selector(agentName),
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector(agentName).MatchLabels},
				Spec: corev1.PodSpec{
					ServiceAccountName: agentName,
					PriorityClassName:  "system-node-critical",
					HostNetwork:        true,
					DNSPolicy:          corev1.DNSClusterFirstWithHostNet,
					NodeSelector:       map[string]string{corev1.LabelOSStable: "linux"},
					// The CNI runs on every Linux node, tainted or not ready.
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					InitContainers:                []corev1.Container{nodePrep},
					Containers:                    []corev1.Container{agent},
					Volumes:                       volumes,
				},
			},
		},
	}
}

// StartOVSCommand is the seine-ovs container's program (see
// installer/image.StartOVS).
const StartOVSCommand = imageBinDir + "/start-ovs"

// ovsCheck is the seine-ovs probes' command: both daemons answer on their
// control sockets.
var ovsCheck = []string{"/bin/sh", "-c", "ovs-appctl -T 5 -t ovsdb-server version >/dev/null && ovs-appctl -T 5 -t ovs-vswitchd version >/dev/null"}

// ovsDaemonSet runs Open vSwitch on every Linux node, apart from the agent.
// Antrea runs it in the agent's pod: with the kernel datapath, packets keep
// flowing while ovs-vswitchd restarts, so an agent upgrade that restarts it
// costs nothing. With the userspace datapath (netdev) ovs-vswitchd is the
// datapath, and every restart drops the node's traffic; so the switch has a
// DaemonSet of its own, whose image (tagged with Open vSwitch's version)
// changes only when Open vSwitch does, and a new Seine restarts agents
// only. The database, sockets and logs are host paths shared with the
// agent.
func ovsDaemonSet(o Options) *appsv1.DaemonSet {
	var volumes []corev1.Volume
	for _, v := range []hostVolume{volOVS, volOVSDB, volOVSLog, volModules} {
		volumes = append(volumes, v.volume())
	}
	probe := func(period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: ovsCheck}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 10,
		}
	}
	ovs := corev1.Container{
		Name:            "ovs",
		Image:           o.ovsImage(),
		Command:         []string{StartOVSCommand},
		VolumeMounts:    mounts(volOVS, volOVSDB, volOVSLog, volModules),
		SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
		ReadinessProbe:  probe(10, 3),
		LivenessProbe:   probe(30, 5),
		Resources:       resources("200m", "100Mi"),
	}
	return &appsv1.DaemonSet{
		TypeMeta:   typeMeta("apps/v1", "DaemonSet"),
		ObjectMeta: meta(ovsName, true, ovsName),
		Spec: appsv1.DaemonSetSpec{
			Selector: selector(ovsName),
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector(ovsName).MatchLabels},
				Spec: corev1.PodSpec{
					PriorityClassName:             "system-node-critical",
					HostNetwork:                   true,
					DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
					NodeSelector:                  map[string]string{corev1.LabelOSStable: "linux"},
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					Containers:                    []corev1.Container{ovs},
					Volumes:                       volumes,
				},
			},
		},
	}
}
