package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
	"github.com/kubeforge/kubeforge/ssh"
)

// Plan is what a run does, decided from the inventory and the observed
// cluster before anything changes. --dry-run prints it; a run executes it.
type Plan struct {
	Seed      string       `json:"seed,omitempty"`      // the control plane of the default API endpoint
	Init      string       `json:"init,omitempty"`      // the host that initialises a new cluster; "" when one exists
	ClusterID string       `json:"clusterID,omitempty"` // etcd's cluster ID, hex; "" for a new cluster
	JoinCP    []string     `json:"joinControlPlanes,omitempty"`
	JoinNodes []string     `json:"joinNodes,omitempty"` // workers whose kubelet joins with a bootstrap token
	Etcd      []EtcdAction `json:"etcd,omitempty"`
	Certs     []string     `json:"certificates,omitempty"` // re-issued or made, with why
	Leaving   []string     `json:"leaving,omitempty"`      // hosts marked remove: true
	// Encryption says what encryption at rest still needs: a rotation's
	// phases, objects to rewrite with the current key.
	Encryption []string `json:"encryption,omitempty"`
	// Network is the pod network and the API objects of it that change.
	Network  *NetworkPlan    `json:"network,omitempty"`
	Hosts    []*HostPlan     `json:"hosts"`
	Teardown []*TeardownPlan `json:"teardown,omitempty"` // reset, scale --remove
	Warnings []string        `json:"warnings,omitempty"`
}

// EtcdAction is one change to etcd's membership.
type EtcdAction struct {
	Action string `json:"action"` // add-learner, promote, remove
	Host   string `json:"host,omitempty"`
	Member string `json:"member,omitempty"` // ID, hex
	Reason string `json:"reason"`
}

// HostPlan is what happens on one host.
type HostPlan struct {
	Host     string        `json:"host"`
	Role     string        `json:"role"` // initialise, join control plane, join, converge
	Files    []FilePlan    `json:"files,omitempty"`
	Restarts []RestartPlan `json:"restarts,omitempty"`
	Images   []string      `json:"images,omitempty"` // image tarballs to import
	Later    []FilePlan    `json:"later,omitempty"`  // files whose content is known only during the run, and why
}

// FilePlan is a file that will be written, and why.
type FilePlan struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// RestartPlan is a service or static pod that will restart, and why.
type RestartPlan struct {
	What   string `json:"what"`
	Reason string `json:"reason"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	if p.Init != "" || len(p.JoinCP)+len(p.JoinNodes)+len(p.Etcd)+len(p.Certs)+len(p.Encryption) > 0 {
		return false
	}
	if p.Network != nil && len(p.Network.Objects) > 0 {
		return false
	}
	for _, h := range p.Hosts {
		if len(h.Files)+len(h.Restarts)+len(h.Images)+len(h.Later) > 0 {
			return false
		}
	}
	for _, t := range p.Teardown {
		if !t.empty() {
			return false
		}
	}
	return true
}

// hostPlan returns the plan of host name; nil without a plan or that host.
func (p *Plan) hostPlan(name string) *HostPlan {
	if p == nil {
		return nil
	}
	for _, h := range p.Hosts {
		if h.Host == name {
			return h
		}
	}
	return nil
}

func (p *Plan) joinsCP(name string) bool { return slices.Contains(p.JoinCP, name) }

// ErrRefused is returned when the observed state forbids the run: acting
// would lose data or split the cluster. The message says what to do.
type ErrRefused struct{ Reason string }

func (e *ErrRefused) Error() string { return "refusing to change the cluster: " + e.Reason }

// quorumGuard refuses a plan whose etcd removals could cost the cluster its
// quorum or a live member: removing the member that just answered (its host
// holds its data, whatever the facts say), or so many voters that those left
// would not be a majority of the voters now. A voter "without data" is
// removed because it is believed dead; when that belief is wrong (a data dir
// the facts did not look in), this is what stops the loss of every member.
func quorumGuard(f *EtcdFacts, actions []EtcdAction, dataDir string) error {
	voters := 0
	for _, m := range f.Members {
		if !m.Learner {
			voters++
		}
	}
	var removed []string
	for _, a := range actions {
		if a.Action != "remove" || a.Host == "" {
			continue
		}
		if a.Host == f.Via {
			return &ErrRefused{Reason: fmt.Sprintf("the plan would remove the etcd member of %s, the one that just answered, because %s shows no data in %s: "+
				"etcd's data dir is not where kubeforge looks (cluster.etcd.extraArgs.data-dir must name it), or the facts are wrong; nothing was changed", a.Host, a.Host, dataDir)}
		}
		removed = append(removed, a.Host)
	}
	if len(removed) > 0 && 2*len(removed) >= voters {
		return &ErrRefused{Reason: fmt.Sprintf("the plan would remove %d of the %d voting etcd members (%s: no data seen in %s), leaving no majority: "+
			"check etcd's data dir on those hosts; if they really lost their data, restore the cluster from a backup (`kubeforge restore`); nothing was changed",
			len(removed), voters, strings.Join(removed, ", "), dataDir)}
	}
	return nil
}

// DecideRoles decides, from etcd's membership and each control plane's data,
// who initialises (only when no control plane holds etcd data or
// membership), who joins, and how etcd's membership is reconciled; and from
// the kubelets' credentials and Leases, which hosts must join.
func DecideRoles(_ context.Context, env *Env) error {
	cf := env.Cluster
	if cf == nil {
		cf = &ClusterFacts{Joined: map[string]bool{}, Credential: map[string]bool{}, Nodes: map[string]bool{}}
		env.Cluster = cf
	}
	p := &Plan{}
	params := map[string]manifests.EtcdParams{}
	cps := env.Hosts(env.Inv.ControlPlanes())
	if len(cps) == 0 {
		return fmt.Errorf("the inventory has no control plane that stays")
	}
	for _, cp := range cps {
		if m := cp.restoreMarker(); m != nil {
			return &ErrRefused{Reason: fmt.Sprintf("a restore is under way on %s (%s, since %s): run the same `kubeforge restore --from ARCHIVE` "+
				"again to finish it (the archive with sha256 %s)", cp.Name, restoreMarkerPath, m.Time.Format(time.RFC3339), m.Archive)}
		}
	}
	if !env.Opts.Upgrade {
		if err := refuseVersionChange(env, cf.KubeletVersions); err != nil {
			return err
		}
	}
	if cf.Etcd == nil {
		var withData, why []string
		env.mu.Lock()
		for _, cp := range cps {
			if cp.Facts != nil && cp.Facts.EtcdData {
				withData = append(withData, cp.Name)
				if p := env.probes[cp.Name]; p != nil && p.err != nil {
					why = append(why, p.err.Error())
				}
			}
		}
		env.mu.Unlock()
		if len(withData) > 0 {
			seen := ""
			if len(why) > 0 {
				seen = " (" + strings.Join(why, "; ") + "; a certificate error means the data belongs to a cluster of another CA than this state dir's)"
			}
			return &ErrRefused{Reason: fmt.Sprintf("%s hold(s) etcd data (%s/member) but no etcd member answers%s, "+
				"so a new cluster would split from it. Start etcd there (`systemctl start kubelet`; "+
				"look at `crictl ps -a`), restore it from a backup, or, if that data is to be discarded, "+
				"`kubeforge reset --hosts %s`; then run again", strings.Join(withData, ", "), manifests.EtcdDataDirOf(env.Inv), seen, strings.Join(withData, ","))}
		}
		// A new cluster is initialised on the seed: the control plane the
		// kubelets already use, else the first of the file.
		init := env.Host(env.Seed())
		p.Init = init.Name
		env.setSeed(init.Name)
		params[init.Name] = manifests.EtcdParams{InitialCluster: init.Name + "=" + manifests.EtcdPeerURL(init.Host), InitialClusterState: "new"}
		for _, cp := range cps {
			if cp != init {
				p.JoinCP = append(p.JoinCP, cp.Name)
			}
		}
	} else {
		p.ClusterID = strconv.FormatUint(cf.Etcd.ClusterID, 16)
		for _, cp := range cps {
			m := cf.Etcd.member(cp)
			if env.Unreachable(cp.Name) {
				// Down: what its data is cannot be seen, so its member stays as it is.
				if m != nil {
					params[cp.Name] = existingParams(cp, cf.Etcd)
				}
				continue
			}
			data := cp.Facts != nil && cp.Facts.EtcdData
			switch {
			case m != nil && data:
				params[cp.Name] = existingParams(cp, cf.Etcd)
				if m.Learner {
					p.Etcd = append(p.Etcd, EtcdAction{Action: "promote", Host: cp.Name, Member: hexID(m.ID), Reason: "a learner with data (a join that was interrupted)"})
				}
			case m != nil && !m.Learner:
				p.Etcd = append(p.Etcd, EtcdAction{Action: "remove", Host: cp.Name, Member: hexID(m.ID),
					Reason: "a voting member whose host holds no etcd data (reset or reinstalled): it rejoins as a learner"})
				p.JoinCP = append(p.JoinCP, cp.Name)
			case m != nil:
				p.JoinCP = append(p.JoinCP, cp.Name) // the learner of an interrupted join: reused
			case data:
				return &ErrRefused{Reason: fmt.Sprintf("%s holds etcd data but is no member of the cluster (etcd cluster %s, seen through %s): "+
					"it was removed or belongs to another cluster. `kubeforge reset --hosts %s` wipes it; then run again",
					cp.Name, p.ClusterID, cf.Etcd.Via, cp.Name)}
			default:
				p.JoinCP = append(p.JoinCP, cp.Name)
			}
		}
		if err := quorumGuard(cf.Etcd, p.Etcd, manifests.EtcdDataDirOf(env.Inv)); err != nil {
			return err
		}
		leaving := map[string]string{}
		for _, h := range env.Leaving {
			leaving[manifests.EtcdPeerURL(h.Host)] = h.Name
		}
		for _, m := range cf.Etcd.Members {
			if m.Host != "" {
				continue
			}
			switch {
			case leaving[m.PeerURL] != "":
				p.Warnings = append(p.Warnings, fmt.Sprintf("etcd member %s of %s (remove: true) stays until `kubeforge scale` removes the host", hexID(m.ID), leaving[m.PeerURL]))
			case m.Learner && m.Name == "" && len(p.JoinCP) > 0:
				p.Etcd = append(p.Etcd, EtcdAction{Action: "remove", Member: hexID(m.ID),
					Reason: fmt.Sprintf("an unstarted learner (%s) of no inventory host: etcd allows one learner, so it would block the joins", m.PeerURL)})
			default:
				p.Warnings = append(p.Warnings, fmt.Sprintf("etcd member %s (%s, %s) belongs to no control plane of the inventory; "+
					"add its host back, or take it out with `kubeforge scale --remove`", hexID(m.ID), m.Name, m.PeerURL))
			}
		}
	}
	for _, cp := range p.JoinCP {
		h := env.Host(env.Inv.Host(cp))
		params[cp] = joinParams(h, cf.Etcd)
	}
	// A bootstrap token for the workers whose kubelet has no valid credential
	// of its own node (a Node object alone is no sign of a kubelet).
	for _, h := range env.Hosts(env.Inv.Workers()) {
		if !cf.Joined[h.Name] && !cf.Credential[h.Name] {
			p.JoinNodes = append(p.JoinNodes, h.Name)
		}
	}
	for _, h := range env.Leaving {
		p.Leaving = append(p.Leaving, h.Name)
	}
	p.Seed = env.Seed().Name
	env.mu.Lock()
	p.Warnings = append(append([]string(nil), env.warnings...), p.Warnings...)
	for _, c := range env.certChanges {
		if c.Action != "unchanged" {
			p.Certs = append(p.Certs, c.String())
		}
	}
	env.etcdParams = params
	env.Plan = p
	env.mu.Unlock()
	return nil
}

// existingParams keeps the flags of a member that has data as the host has
// them (etcd reads them only on its first start); without a manifest they
// are rebuilt from the membership.
func existingParams(h *Host, ef *EtcdFacts) manifests.EtcdParams {
	if f := h.Facts; f != nil && f.EtcdInitialCluster != "" {
		return manifests.EtcdParams{InitialCluster: f.EtcdInitialCluster, InitialClusterState: f.EtcdInitialState}
	}
	return manifests.EtcdParams{InitialCluster: initialCluster(ef.Members, 0, h), InitialClusterState: "existing"}
}

// joinParams predicts a joining member's flags from the membership (the join
// renders them again from the list etcd returns when the learner is added).
func joinParams(h *Host, ef *EtcdFacts) manifests.EtcdParams {
	var members []EtcdMember
	if ef != nil {
		members = ef.Members
	}
	if m := ef.member(h); m != nil {
		return manifests.EtcdParams{InitialCluster: initialCluster(members, m.ID, h), InitialClusterState: "existing"}
	}
	members = append(append([]EtcdMember(nil), members...), EtcdMember{ID: 0, PeerURL: manifests.EtcdPeerURL(h.Host)})
	return manifests.EtcdParams{InitialCluster: initialCluster(members, 0, h), InitialClusterState: "existing"}
}

// initialCluster is --initial-cluster for self, as kubeadm builds it from
// the list MemberAdd returns: every member with its name; self (selfID, or
// the member with self's peer URL) named after the host; an unstarted member
// named after its inventory host, or its ID.
func initialCluster(members []EtcdMember, selfID uint64, self *Host) string {
	peer := manifests.EtcdPeerURL(self.Host)
	var parts []string
	for _, m := range members {
		name := m.Name
		switch {
		case (selfID != 0 && m.ID == selfID) || m.PeerURL == peer:
			name = self.Name
		case name == "" && m.Host != "":
			name = m.Host
		case name == "":
			name = hexID(m.ID)
		}
		parts = append(parts, name+"="+m.PeerURL)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }

// etcdParamsFor returns the etcd flags decided for control plane h, or the
// inventory-order default when no decision was made (offline render).
func (e *Env) etcdParamsFor(h *Host) manifests.EtcdParams {
	e.mu.Lock()
	p, ok := e.etcdParams[h.Name]
	e.mu.Unlock()
	if ok {
		return p
	}
	return EtcdParamsFor(e.Inv, h.Host)
}

// PlanHost computes, reading only, what h receives: the files that differ
// (with why), the images to import, and the restarts that follow.
func PlanHost(ctx context.Context, env *Env, h *Host) error {
	p := env.Plan
	if p == nil {
		return fmt.Errorf("plan %s: no decision made (cluster/observe skipped?)", h.Name)
	}
	hp := &HostPlan{Host: h.Name, Role: "converge"}
	switch {
	case p.Init == h.Name:
		hp.Role = "initialise the cluster"
	case p.joinsCP(h.Name):
		hp.Role = "join control plane"
	case slices.Contains(p.JoinNodes, h.Name):
		hp.Role = "join"
	}
	files, err := env.NodeFiles(h)
	if err != nil {
		return err
	}
	files = append(append([]nodefile.File(nil), kernelSettings...), files...)
	network := env.NetworkPlugin() != inventory.CNIManifest
	var later []nodefile.File // pod network files known only once every node has a pod CIDR
	switch {
	case !network:
	case env.Cluster != nil && allHaveCIDRs(env, env.Cluster.PodCIDRs):
		files = append(files, podNetworkFiles(env, h, env.Cluster.PodCIDRs)...)
	case env.Cluster != nil && env.Cluster.PodCIDRs[h.Name] != "":
		// A node with its CIDR while others join: its CNI config and the unit are
		// known now; only the routes to the others wait.
		for _, f := range podNetworkFiles(env, h, env.Cluster.PodCIDRs) {
			if f.Path == routesPath {
				later = append(later, f)
			} else {
				files = append(files, f)
			}
		}
	default:
		later = podNetworkFiles(env, h, nil)
	}
	sf := make([]ssh.File, 0, len(files))
	for _, f := range files {
		sf = append(sf, ssh.File{Path: f.Path, Mode: f.Mode, Data: f.Data})
	}
	proxied := env.Inv.UsesAPIProxy() && !h.IsControlPlane()
	if proxied {
		bin, err := apiProxyBinary(env, h)
		if err != nil {
			return err
		}
		sf = append(sf, bin)
	}
	runtimeFiles, err := plannedRuntime(env, h)
	if err != nil {
		return err
	}
	sf = append(sf, runtimeFiles...)
	registries, dropped, err := registryFiles(env, h)
	if err != nil {
		return err
	}
	sf = append(sf, nodeFiles(registries)...)
	var imgs []*localArtifact
	if env.Inv.Cluster.Artifacts != "" {
		af, im, err := artifactFiles(env, h)
		if err != nil {
			return err
		}
		sf = append(sf, af...)
		imgs = im
	}
	diffs, err := h.Client.Check(ctx, sf)
	if err != nil {
		return fmt.Errorf("plan %s: %w", h.Name, err)
	}
	differ := map[string]bool{}
	for _, d := range diffs {
		differ[d.Path] = true
	}
	var same []ssh.File
	for _, f := range sf {
		if !differ[f.Path] {
			same = append(same, f)
		}
	}
	h.verify(same)
	kubelet := kubeletRestartReason(h.Facts)
	for _, d := range diffs {
		hp.Files = append(hp.Files, FilePlan{Path: d.Path, Reason: string(d.Reason)})
		if isKubeletInput(h, d.Path) && kubelet == "" {
			kubelet = d.Path + " " + string(d.Reason)
		}
		if dir, base := path.Split(d.Path); dir == manifests.ManifestsDir+"/" && h.Facts != nil && h.Facts.KubeletActive {
			hp.Restarts = append(hp.Restarts, RestartPlan{What: "static pod " + strings.TrimSuffix(base, ".yaml"), Reason: "manifest " + string(d.Reason)})
		}
	}
	for _, p := range dropped {
		hp.Files = append(hp.Files, FilePlan{Path: p, Reason: registryRemovedReason})
	}
	if len(runtimeFiles) > 0 {
		why := ""
		for _, f := range runtimeFiles {
			if differ[f.Path] && restartsContainerd(f.Path) {
				why = f.Path + " differs"
				break
			}
		}
		switch {
		case why != "":
		case h.Facts.RuntimePending:
			why = "an install cut short wrote its files and never saw it answer"
		case !(h.Facts.CRISocket && h.Facts.CRIReady):
			why = "not running"
		}
		if why != "" {
			hp.Restarts = append(hp.Restarts, RestartPlan{What: "containerd", Reason: why})
		}
	}
	planAPIProxy(env, h, hp, differ, proxied)
	if server := h.Facts.KubeletServer; !h.IsControlPlane() && h.Facts.KubeletConf && server != "" && server != env.Inv.NodeServerURL() {
		why := "its server moves from " + server + " to " + env.Inv.NodeServerURL() + " (docs/ha.md); its credentials stay"
		hp.Files = append(hp.Files, FilePlan{Path: "/etc/kubernetes/kubelet.conf", Reason: why})
		if kubelet == "" {
			kubelet = "kubelet.conf: " + why
		}
	}
	if hp.Role == "join" {
		hp.Files = append(hp.Files, FilePlan{Path: pki.BootstrapKubeletPath, Reason: "the kubelet joins: a fresh bootstrap token (deleted once it has joined)"})
		if kubelet == "" {
			kubelet = "joins the cluster"
		}
	}
	if kubelet != "" {
		hp.Restarts = append(hp.Restarts, RestartPlan{What: "kubelet", Reason: kubelet})
	}
	var missing []*localArtifact
	if len(imgs) > 0 {
		missing = imgs // a runtime not running yet has no image
		if h.Facts.CRISocket && h.Facts.CRIReady {
			if missing, err = missingImages(ctx, h, imgs); err != nil {
				return err
			}
		}
		for _, a := range missing {
			hp.Images = append(hp.Images, path.Base(a.path))
		}
	}
	// Room for all of it, before anything is written (a full disk fails an upload half-way).
	full, err := checkDiskSpace(env, h, sf, differ, missing)
	if err != nil {
		return err
	}
	if failed := env.addChecks(full); len(failed) > 0 {
		return &PreflightError{Failed: failed}
	}
	for _, f := range later {
		hp.Later = append(hp.Later, FilePlan{Path: f.Path, Reason: "written once every node's pod CIDR is assigned"})
	}
	env.mu.Lock()
	p.Hosts = append(p.Hosts, hp)
	sort.Slice(p.Hosts, func(i, j int) bool { return p.Hosts[i].Host < p.Hosts[j].Host })
	env.mu.Unlock()
	return nil
}

// allHaveCIDRs reports whether every host of the inventory has a pod CIDR.
func allHaveCIDRs(env *Env, cidrs map[string]string) bool {
	for _, h := range env.Inv.Hosts {
		if cidrs[h.Name] == "" {
			return false
		}
	}
	return true
}

// WritePlan prints the plan for people.
func (p *Plan) WritePlan(w io.Writer) {
	switch {
	case p.Init != "":
		fmt.Fprintf(w, "Cluster: none found on the hosts: %s initialises a new one.\n", p.Init)
	case p.Seed != "":
		fmt.Fprintf(w, "Cluster: etcd cluster %s; API endpoint on %s.\n", p.ClusterID, p.Seed)
	case p.ClusterID != "":
		fmt.Fprintf(w, "Cluster: etcd cluster %s.\n", p.ClusterID)
	}
	if n := p.Network; n != nil {
		what := ""
		switch {
		case n.Plugin == "flannel":
			what = fmt.Sprintf(": flannel VXLAN (UDP %d) with kube-router's NetworkPolicy firewall, pods' MTU %d", manifests.FlannelVXLANPort, n.MTU)
		case n.Plugin == "bridge":
			what = ": a bridge per node and routes between nodes (one L2 segment; no NetworkPolicy)"
		}
		fmt.Fprintf(w, "Pod network: %s%s (%s).\n", n.Plugin, what, n.Why)
		for _, o := range n.Objects {
			fmt.Fprintf(w, "  %-7s %s\n", o.Action, o.Object)
		}
	}
	if len(p.JoinCP) > 0 {
		fmt.Fprintf(w, "Control planes joining (one at a time, etcd learner then voter): %s\n", strings.Join(p.JoinCP, ", "))
	}
	if len(p.JoinNodes) > 0 {
		fmt.Fprintf(w, "Workers joining (bootstrap token, TLS bootstrap): %s\n", strings.Join(p.JoinNodes, ", "))
	}
	for _, a := range p.Etcd {
		who := a.Host
		if who == "" {
			who = "member " + a.Member
		}
		fmt.Fprintf(w, "etcd: %s %s: %s\n", a.Action, who, a.Reason)
	}
	for _, c := range p.Certs {
		fmt.Fprintf(w, "certificate: %s\n", c)
	}
	for _, e := range p.Encryption {
		fmt.Fprintf(w, "encryption: %s\n", e)
	}
	if len(p.Leaving) > 0 {
		fmt.Fprintf(w, "Marked remove: true (not installed; `kubeforge scale` removes them): %s\n", strings.Join(p.Leaving, ", "))
	}
	for _, h := range p.Hosts {
		n := len(h.Files) + len(h.Restarts) + len(h.Images) + len(h.Later)
		if n == 0 {
			fmt.Fprintf(w, "%s (%s): no changes\n", h.Host, h.Role)
			continue
		}
		fmt.Fprintf(w, "%s (%s):\n", h.Host, h.Role)
		for _, f := range h.Files {
			fmt.Fprintf(w, "  write   %-58s %s\n", f.Path, f.Reason)
		}
		for _, i := range h.Images {
			fmt.Fprintf(w, "  import  %s\n", i)
		}
		for _, r := range h.Restarts {
			fmt.Fprintf(w, "  restart %-58s %s\n", r.What, r.Reason)
		}
		for _, l := range h.Later {
			fmt.Fprintf(w, "  later   %-58s %s\n", l.Path, l.Reason)
		}
	}
	for _, t := range p.Teardown {
		t.write(w)
	}
	for _, wn := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", wn)
	}
	switch {
	case !p.Empty():
	case len(p.Teardown) > 0:
		fmt.Fprintln(w, "The plan is empty: there is nothing to tear down.")
	default:
		fmt.Fprintln(w, "The plan is empty: the cluster already matches the inventory.")
	}
}

// WriteJSON prints the plan as one JSON line, {"type":"plan","plan":{...}},
// so it reads as one more event of the --output json stream.
func (p *Plan) WriteJSON(w io.Writer) error {
	return json.NewEncoder(w).Encode(struct {
		Type string `json:"type"`
		Plan *Plan  `json:"plan"`
	}{"plan", p})
}

// RequireCluster refuses to go on when the plan would make a new cluster
// (scale adds hosts to one that exists).
func RequireCluster(_ context.Context, env *Env) error {
	if env.Plan != nil && env.Plan.Init != "" {
		return &ErrRefused{Reason: "no etcd member answers and no control plane holds etcd data: there is no cluster to add hosts to; run `kubeforge up` to create it"}
	}
	return nil
}
