package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// Recording is a transcript of the commands kubeforge ran on real hosts, with each host's identity
// replaced by placeholders ({{h0.ip}}, {{h0.machine_id}}, ..., {{clock}}).
type Recording struct {
	Note     string    `json:"note"`
	Recorded time.Time `json:"recorded"`
	Source   string    `json:"source"`
	// Cluster is the cluster block of the inventory used while recording: replaying the same commands
	// needs the same settings (the facts command names the CRI socket and the kubelet's resolv.conf).
	Cluster map[string]any `json:"cluster"`
	// RuntimeVersions is the artifacts' runtime/VERSIONS then (preflight reads it locally).
	RuntimeVersions string         `json:"runtimeVersions,omitempty"`
	Hosts           []RecordedHost `json:"hosts"`
}

// RecordedHost is the transcript of one real host.
type RecordedHost struct {
	Role      string     `json:"role"` // control-plane or worker
	Exchanges []Exchange `json:"exchanges"`
}

// Exchange is one exec request and what the host answered.
type Exchange struct {
	User       string  `json:"user"`
	Cmd        string  `json:"cmd"`
	Stdout     string  `json:"stdout"`
	Stderr     string  `json:"stderr,omitempty"`
	Exit       int     `json:"exit"`
	StdinBytes int64   `json:"stdinBytes,omitempty"` // stdin is never recorded (it may carry secrets)
	DurationMS float64 `json:"durationMs"`
}

const simulationNote = "fleetsim: a SIMULATED fleet. Commands are answered from a recording of a real host; " +
	"this measures kubeforge (runner, SSH pool, memory), not Kubernetes."

// loadRecording reads a recording file.
func loadRecording(path string) (*Recording, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read recording: %w", err)
	}
	var r Recording
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("parse recording %s: %w", path, err)
	}
	if len(r.Hosts) == 0 {
		return nil, fmt.Errorf("recording %s holds no host", path)
	}
	return &r, nil
}

// identity is what makes one host unique to kubeforge's preflight (preflight/cluster checks hostname,
// machine-id, product_uuid and MACs for uniqueness; the node IP names it in every probe).
type identity struct {
	Name, Hostname, IP, MachineID, ProductUUID string
	MACs                                       []string
}

// factsIdentity reads the identity from the output of kubeforge's facts script ("key<TAB>value" lines).
func factsIdentity(stdout string) (id identity, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), "\t")
		if !found {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "hostname":
			id.Hostname, ok = v, true
		case "machineid":
			id.MachineID = v
		case "productuuid":
			id.ProductUUID = v
		case "mac": // "eth0 02:42:..."
			if _, mac, found := strings.Cut(v, " "); found && mac != "" {
				id.MACs = append(id.MACs, mac)
			}
		}
	}
	return id, ok
}

// pairs lists the (value, placeholder) substitutions of host i's identity, longest value first, empty
// values and repeats left out. The inventory name and the hostname share {{hI.name}} when equal.
func (id identity) pairs(i int) [][2]string {
	p := func(f string) string { return fmt.Sprintf("{{h%d.%s}}", i, f) }
	out := [][2]string{{id.Name, p("name")}, {id.Hostname, p("hostname")}, {id.IP, p("ip")},
		{id.MachineID, p("machine_id")}, {id.ProductUUID, p("product_uuid")}}
	for k, m := range id.MACs {
		out = append(out, [2]string{m, p(fmt.Sprintf("mac%d", k))})
	}
	var kept [][2]string
	seen := map[string]bool{}
	for _, pr := range out {
		if pr[0] != "" && !seen[pr[0]] {
			seen[pr[0]] = true
			kept = append(kept, pr)
		}
	}
	for a := 1; a < len(kept); a++ { // longest first, so no value is replaced inside a longer one
		for b := a; b > 0 && len(kept[b][0]) > len(kept[b-1][0]); b-- {
			kept[b], kept[b-1] = kept[b-1], kept[b]
		}
	}
	return kept
}

// replaceTokens replaces each pair's value by its replacement where it stands as a token: not
// inside a longer word, number or address (so 10.0.0.1 is not replaced inside 10.0.0.12).
func replaceTokens(s string, pairs [][2]string) string {
	for _, p := range pairs {
		if p[0] == "" || !strings.Contains(s, p[0]) {
			continue
		}
		var b strings.Builder
		rest := s
		for {
			i := strings.Index(rest, p[0])
			if i < 0 {
				b.WriteString(rest)
				break
			}
			end := i + len(p[0])
			if (i > 0 && isWordByte(rest[i-1])) || (end < len(rest) && isWordByte(rest[end])) {
				b.WriteString(rest[:end])
			} else {
				b.WriteString(rest[:i])
				b.WriteString(p[1])
			}
			rest = rest[end:]
		}
		s = b.String()
	}
	return s
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// clockLine is the facts script's clock: the host's time when it ran, replayed as the time of the answer
// (else every replayed host would be off by the age of the recording).
var clockLine = regexp.MustCompile(`(?m)^clock\t[0-9]+\.[0-9]+$`)

// template replaces every recorded host's identity by placeholders, in every command and answer.
func template(hosts []RecordedHost, ids []identity) {
	var pairs [][2]string
	for i, id := range ids {
		pairs = append(pairs, id.pairs(i)...)
	}
	for a := 1; a < len(pairs); a++ {
		for b := a; b > 0 && len(pairs[b][0]) > len(pairs[b-1][0]); b-- {
			pairs[b], pairs[b-1] = pairs[b-1], pairs[b]
		}
	}
	for h := range hosts {
		for x := range hosts[h].Exchanges {
			e := &hosts[h].Exchanges[x]
			e.Cmd = replaceTokens(e.Cmd, pairs)
			e.Stdout = clockLine.ReplaceAllString(replaceTokens(e.Stdout, pairs), "clock\t{{clock}}")
			e.Stderr = replaceTokens(e.Stderr, pairs)
		}
	}
}

// normalisation makes the matching robust to what varies between runs and users but does not change
// what a command reads. Applied in order to the recorded and the incoming command alike:
//
//  1. `sudo -n -- ` in front: kubeforge wraps every privileged command in it for a non-root user
//     (ssh.Client.run), so a recording made as root answers a sudo user and the other way round;
//  2. per-run temp names: `.NAME.kubeforge-<12 hex>` (ssh.tempName) and `kubeforge-upload.XXXXXXXX`
//     (the staging directory made by mktemp);
//  3. sha256 digests (64 hex digits): the checksums of uploaded content, which differs between runs.
var normalisation = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`^sudo -n -- `), ""},
	{regexp.MustCompile(`\.kubeforge-[0-9a-f]{12}\b`), ".kubeforge-{{nonce}}"},
	{regexp.MustCompile(`kubeforge-upload\.[A-Za-z0-9]{8}\b`), "kubeforge-upload.{{tmp}}"},
	{regexp.MustCompile(`\b[0-9a-f]{64}\b`), "{{sha256}}"},
}

func normalise(cmd string) string {
	for _, n := range normalisation {
		cmd = n.re.ReplaceAllString(cmd, n.repl)
	}
	return cmd
}

// replay answers commands from a recording.
type replay struct {
	rec   *Recording
	hosts []*replayHost
}

// replayHost indexes one recorded host's exchanges by command: as recorded, and normalised.
type replayHost struct {
	index     int
	role      string
	exact     map[string]*Exchange
	norm      map[string]*Exchange
	listening map[int]bool // TCP ports its facts reported listening
	macs      int          // MAC placeholders its answers hold
}

func newReplay(rec *Recording) *replay {
	r := &replay{rec: rec}
	for i := range rec.Hosts {
		h := &replayHost{index: i, role: rec.Hosts[i].Role, exact: map[string]*Exchange{}, norm: map[string]*Exchange{}, listening: map[int]bool{}}
		for x := range rec.Hosts[i].Exchanges {
			e := &rec.Hosts[i].Exchanges[x]
			if _, ok := h.exact[e.Cmd]; !ok { // the first answer recorded wins
				h.exact[e.Cmd] = e
			}
			if k := normalise(e.Cmd); h.norm[k] == nil {
				h.norm[k] = e
			}
			for _, l := range strings.Split(e.Stdout, "\n") {
				if v, ok := strings.CutPrefix(l, "listen\t"); ok {
					var p int
					if _, err := fmt.Sscanf(v, "%X", &p); err == nil {
						h.listening[p] = true
					}
				}
			}
			for h.macs < 64 && strings.Contains(e.Stdout, fmt.Sprintf("{{h%d.mac%d}}", i, h.macs)) {
				h.macs++
			}
		}
		r.hosts = append(r.hosts, h)
	}
	return r
}

// templateFor is the recorded host an endpoint of role impersonates: the first with that role.
func (r *replay) templateFor(role string) *replayHost {
	for _, h := range r.hosts {
		if h.role == role {
			return h
		}
	}
	return r.hosts[0]
}

// Match kinds, counted per endpoint.
const (
	matchExact      = "exact"
	matchNormalised = "normalised"
	matchModel      = "model"
	matchNone       = "unrecorded"
)

// lookup finds the answer to cmd, already templated for host t: in t's own exchanges, then in the
// other recorded hosts' (so a command recorded on one role answers on another), exact before normalised.
func (r *replay) lookup(t *replayHost, cmd string) (*Exchange, string) {
	order := append([]*replayHost{t}, r.hosts...)
	for _, h := range order {
		if e := h.exact[cmd]; e != nil {
			return e, matchExact
		}
	}
	key := normalise(cmd)
	for _, h := range order {
		if e := h.norm[key]; e != nil {
			return e, matchNormalised
		}
	}
	return nil, matchNone
}
