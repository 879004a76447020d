package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	yamlv2 "go.yaml.in/yaml/v2"
	"gopkg.in/yaml.v3"
)

// Load reads, decodes, defaults and validates the inventory file at path.
// Decoding is strict: an unknown field is a problem. Every problem found is
// returned at once in a *ValidationError, each with its file and line.
// Warnings do not fail Load; they are returned in inv.Warnings. On a
// *ValidationError the returned inventory is nil.
func Load(path string) (*Inventory, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve inventory path: %w", err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, &ReadError{Path: abs, Err: err}
	}
	defer f.Close()
	// One byte more than the limit is enough for Parse to refuse the file.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &ReadError{Path: abs, Err: err}
	}
	return Parse(data, abs)
}

// MaxFileSize is the largest inventory file Load and Parse read, so that a
// wrong file (a disk image, a log) costs neither the memory nor the minutes
// its parse would; an inventory of ten thousand hosts is about 1 MiB.
const MaxFileSize = 16 << 20

// ReadError is an inventory file that cannot be read (missing, a directory,
// no permission): bad input, like an invalid one.
type ReadError struct {
	Path string
	Err  error
}

func (e *ReadError) Error() string {
	msg := e.Err.Error()
	var pe *os.PathError
	if errors.As(e.Err, &pe) {
		msg = pe.Err.Error()
	}
	return fmt.Sprintf("cannot read the inventory %s: %s", e.Path, msg)
}

func (e *ReadError) Unwrap() error { return e.Err }

// Parse decodes, defaults and validates one inventory document held in data.
// path names the file in messages and anchors relative paths (identity files,
// artifacts, ...); it is made absolute. It behaves like Load otherwise.
func Parse(data []byte, path string) (*Inventory, error) {
	if path != "" {
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	d := &decoded{file: path}
	inv := d.decode(data)
	if inv == nil {
		sortProblems(d.problems)
		return nil, &ValidationError{Problems: d.problems}
	}
	inv.Path = path
	inv.SetDefaults()
	c := newChecker(inv, d.root)
	c.decodeFailed = d.failed
	c.problems = append(c.problems, d.problems...)
	if err := c.finish(inv); err != nil {
		return nil, err
	}
	return inv, nil
}

// caused reports whether a problem about field can be an effect of failed,
// a value that could not be decoded and was left empty: field is failed,
// holds it ("hosts[0]" holds "hosts[0].roles") or lies within it. The field
// "" is the whole document.
func caused(failed, field string) bool {
	return failed == "" || below(failed, field) || below(field, failed)
}

// below reports whether field a is b or lies within it.
func below(a, b string) bool {
	if b == "" || !strings.HasPrefix(a, b) {
		return false
	}
	rest := a[len(b):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}

// decoded carries what decoding learnt: the document's root node (for lines)
// and the problems met on the way.
type decoded struct {
	file     string
	root     *yaml.Node // the document's top-level mapping
	problems []Problem
	failed   []string     // fields whose value could not be decoded ("" for the whole document)
	dupKeys  map[int]bool // lines of keys already reported as written twice
}

// fail records the field at path as not decoded; a nil path (not found) is none.
func (d *decoded) fail(at []any) {
	if len(at) > 0 {
		d.failed = append(d.failed, fieldString(at))
	}
}

func (d *decoded) add(line int, field, msg, hint string) {
	d.problems = append(d.problems, Problem{File: d.file, Line: line, Field: field, Message: msg, Hint: hint})
}

var (
	syntaxLineRe       = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	typeLineRe         = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRe          = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
	unmarshalNoValueRe = regexp.MustCompile("^cannot unmarshal !!(\\w+) into (\\S+)$")
	unmarshalRe        = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	duplicateKeyRe     = regexp.MustCompile(`^mapping key ("(?:[^"\\]|\\.)*") already defined at line (\d+)$`)
	quotedRe           = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
)

// decode parses data into a node tree (syntax, one document, not empty) and
// then strictly into an Inventory. It returns nil when nothing usable came out.
func (d *decoded) decode(data []byte) *Inventory {
	if len(data) > MaxFileSize {
		d.add(0, "", fmt.Sprintf("the inventory file is larger than %d MiB", MaxFileSize>>20), "is this the inventory? one of ten thousand hosts is about 1 MiB")
		return nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		d.add(0, "", "the inventory file is empty", "start from examples/cluster.yaml")
		return nil
	}
	if line, col, what := badCharacter(data); line > 0 {
		d.add(line, "", fmt.Sprintf("%s at column %d", what, col), "an inventory is UTF-8 text; retype the value or remove the character")
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.add(0, "", "the inventory file is empty (only comments)", "start from examples/cluster.yaml")
		} else {
			d.addSyntax(err, data)
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.addSyntax(err, data)
		return nil
	default:
		d.add(next.Line, "", "the file holds more than one YAML document", "keep one inventory per file; remove the \"---\" separator")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		// The whole file: yaml.v3 places the implicit null of "---" on
		// the line after the last one.
		d.add(0, "", "the inventory file is empty", "start from examples/cluster.yaml")
		return nil
	}
	if root.Kind != yaml.MappingNode {
		d.add(root.Line, "", "the inventory must be a YAML mapping with apiVersion, kind, cluster, ssh and hosts", "start from examples/cluster.yaml")
		return nil
	}
	d.root = root

	// Strict decoding into the types; yaml.v3 keeps going after type errors and
	// unknown fields and reports them all, each with its line.
	var inv Inventory
	sd := yaml.NewDecoder(bytes.NewReader(data))
	sd.KnownFields(true)
	if err := sd.Decode(&inv); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			d.addSyntax(err, data)
			return nil
		}
		for _, msg := range te.Errors {
			d.addTypeError(msg)
		}
	}
	// Fill the lines of hosts.
	loc := locator{root: root}
	for i, h := range inv.Hosts {
		if h == nil {
			inv.Hosts[i] = &Host{}
			h = inv.Hosts[i]
		}
		if n := loc.node("hosts", i); n != nil {
			h.Line = n.Line
		}
	}
	return &inv
}

// badCharacter finds the first byte sequence that is not UTF-8, or a control
// character YAML refuses, and says where (line and column from 1).
func badCharacter(data []byte) (line, col int, what string) {
	line, col = 1, 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return line, col, fmt.Sprintf("invalid UTF-8 (byte 0x%02x)", data[i])
		case r == '\n':
			line, col = line+1, 0
		case r == '\t' || r == '\r':
		case unicode.IsControl(r) || r == 0xFEFF && i > 0:
			return line, col, fmt.Sprintf("control character %+q", r)
		}
		i += size
		col++
	}
	return 0, 0, ""
}

var unknownAnchorRe = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// addSyntax records a YAML syntax error with its line. yaml.v3 reports the
// line where the enclosing block starts, which can be far above the mistake;
// the line of the mistake is the first line at which a prefix of the file
// fails with the same error.
func (d *decoded) addSyntax(err error, data []byte) {
	msg := err.Error()
	m := syntaxLineRe.FindStringSubmatch(msg)
	if m == nil {
		problem := strings.TrimPrefix(msg, "yaml: ")
		line := 0
		if a := unknownAnchorRe.FindStringSubmatch(problem); a != nil {
			// The alias's line: the first "*name" not inside a comment.
			for i, l := range strings.Split(string(data), "\n") {
				if c := strings.Index(l, "*"+a[1]); c >= 0 && !strings.Contains(l[:c], "#") {
					line = i + 1
					break
				}
			}
			d.add(line, "", "YAML: alias *"+a[1]+" refers to no anchor", "define &"+a[1]+" before it is used, or write the value itself")
			return
		}
		if problem == "document contains excessive aliasing" {
			d.add(line, "", "YAML: the aliases expand to too much", "write the values out, or nest fewer aliases")
			return
		}
		d.add(line, "", "YAML syntax error: "+problem, "")
		return
	}
	line, _ := strconv.Atoi(m[1])
	problem := m[2]
	at := mistakeLine(data, problem)
	if at > 0 && at != line {
		d.add(at, "", fmt.Sprintf("YAML syntax error: %s (in the block that starts at line %d)", problem, line), syntaxHint)
		return
	}
	d.add(line, "", "YAML syntax error: "+problem, syntaxHint)
}

const syntaxHint = "check the indentation (spaces, not tabs), the \"- \" of list items and the quoting on this line"

// mistakeLine returns the line of the mistake behind the YAML syntax error
// problem in data, or 0 when no parse fails so. It is the line of the token at
// which the parse fails (yaml.v2 names it; yaml.v3 names the start of the
// enclosing block, which can be far above), unless a shorter prefix of the
// file already fails so: then the mistake began earlier (a bracket or a quote
// never closed) and it is the first line at which a prefix fails. Once a prefix
// fails so, every longer one does, so a binary search finds that line.
//
// The parses are yaml.v2's: it shares libyaml's parser and messages with
// yaml.v3 and builds lighter trees. yaml.v3's serve when yaml.v2 does not fail
// with problem.
func mistakeLine(data []byte, problem string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	offsets := make([]int, len(lines)+1)
	for i, l := range lines {
		offsets[i+1] = offsets[i] + len(l)
	}
	fails := func(n int) bool { return yamlv2FailLine(data[:offsets[n]], problem) > 0 }
	hi := min(yamlv2FailLine(data, problem), len(lines))
	if hi <= 0 {
		fails = func(n int) bool { return yamlv3Fails(data[:offsets[n]], problem) }
		if !fails(len(lines)) {
			return 0
		}
		hi = len(lines)
	}
	if hi == 1 || !fails(hi-1) {
		return hi
	}
	lo, hi := 1, hi-1 // fails(hi)
	for lo < hi {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// yamlv2FailLine returns the line of the token at which yaml.v2 fails to
// parse data with the message problem, or 0 when it does not fail so.
func yamlv2FailLine(data []byte, problem string) int {
	var skip struct{} // only the parse matters
	err := yamlv2.Unmarshal(data, &skip)
	if err == nil {
		return 0
	}
	m := syntaxLineRe.FindStringSubmatch(err.Error())
	if m == nil || m[2] != problem {
		return 0
	}
	line, _ := strconv.Atoi(m[1])
	if yamlv2ParserProblems[problem] {
		line++ // yaml.v2 counts the parser's lines from 0, the scanner's from 1
	}
	return max(line, 1)
}

// yamlv2ParserProblems are the problems libyaml's parser (not its scanner) reports.
var yamlv2ParserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// yamlv3Fails reports whether yaml.v3 fails to parse data with the message problem.
func yamlv3Fails(data []byte, problem string) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var node yaml.Node
		err := dec.Decode(&node)
		if err == nil {
			continue
		}
		m := syntaxLineRe.FindStringSubmatch(err.Error())
		return m != nil && m[2] == problem
	}
}

// addTypeError turns one entry of a *yaml.TypeError into a problem.
func (d *decoded) addTypeError(msg string) {
	line := 0
	if m := typeLineRe.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if m := unknownRe.FindStringSubmatch(msg); m != nil {
		name, typ := m[1], m[2]
		field := fieldString(locator{root: d.root}.findKey(line, name))
		d.problems = append(d.problems, Problem{
			File: d.file, Line: line, Field: field,
			Message: fmt.Sprintf("unknown field %q", name),
			Hint:    unknownFieldHint(name, typ),
		})
		return
	}
	if m := duplicateKeyRe.FindStringSubmatch(msg); m != nil {
		// yaml.v3 leaves a mapping with a key written twice empty: report
		// the key, and nothing that the empty mapping causes.
		if d.dupKeys[line] {
			return // a third time: the second one's message says it
		}
		if d.dupKeys == nil {
			d.dupKeys = map[int]bool{}
		}
		d.dupKeys[line] = true
		name, err := strconv.Unquote(m[1])
		if err != nil {
			name = m[1]
		}
		at := locator{root: d.root}.findKey(line, name)
		if at != nil {
			d.failed = append(d.failed, fieldString(at[:len(at)-1]))
		}
		d.problems = append(d.problems, Problem{File: d.file, Line: line, Field: fieldString(at),
			Message: fmt.Sprintf("mapping key %s already defined at line %s", m[1], m[2]),
			Hint:    "write each key once in a mapping; remove or rename one of them"})
		return
	}
	if m := unmarshalNoValueRe.FindStringSubmatch(msg); m != nil {
		// A mapping or list where a value belongs: when an alias brought it,
		// yaml.v3 names the anchor's line; the mistake is at the alias.
		at, n := locator{root: d.root}.findAlias(line)
		if n == nil {
			at, n = locator{root: d.root}.findKind(line, map[string]yaml.Kind{"map": yaml.MappingNode, "seq": yaml.SequenceNode}[m[1]])
		}
		if n != nil {
			line = n.Line
		}
		field := fieldString(at)
		d.fail(at)
		what := map[string]string{"map": "a mapping", "seq": "a list"}[m[1]]
		if what == "" {
			what = "a " + m[1]
		}
		d.problems = append(d.problems, Problem{File: d.file, Line: line, Field: field,
			Message: fmt.Sprintf("%s is not %s", what, typeDescription(m[2], m[1], "")), Hint: typeHint(m[2])})
		return
	}
	if m := unmarshalRe.FindStringSubmatch(msg); m != nil {
		tag, shown, typ := m[1], m[2], m[3]
		at, n := locator{root: d.root}.findValue(line, strings.TrimSuffix(shown, "..."))
		value := shown
		if n != nil && n.Kind == yaml.ScalarNode {
			value = n.Value
		}
		field := fieldString(at)
		d.fail(at)
		d.problems = append(d.problems, Problem{File: d.file, Line: line, Field: field,
			Message: fmt.Sprintf("%s is not %s", describeValue(value, tag), typeDescription(typ, tag, value)), Hint: typeHint(typ)})
		return
	}
	field := ""
	if q := quotedRe.FindStringSubmatch(msg); q != nil {
		at, _ := locator{root: d.root}.findValue(line, q[1])
		field = fieldString(at)
		d.fail(at)
	}
	d.add(line, field, msg, "")
}

// describeValue shows a value as written, shortened, with look-alike and
// control characters escaped.
func describeValue(v, tag string) string {
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	q := strconv.QuoteToASCII(v)
	if tag == "str" || q != `"`+v+`"` {
		return q
	}
	return v
}

// typeDescription says in words what a Go type of the inventory wants.
func typeDescription(typ, tag, value string) string {
	switch typ {
	case "int", "int32", "int64", "uint16":
		if tag == "float" && !strings.ContainsAny(value, ".eE") {
			return "a whole number in range (this one is too large)"
		}
		return "a whole number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "[]inventory.Role":
		return "a list of roles"
	case "[]string":
		return "a list"
	case "[]inventory.Taint":
		return "a list of taints"
	case "map[string]string", "map[string]bool", "map[string]interface {}":
		return "a mapping"
	}
	if strings.HasPrefix(typ, "[]") {
		return "a list"
	}
	if strings.HasPrefix(typ, "inventory.") || strings.HasPrefix(typ, "map[") {
		return "a mapping"
	}
	return "a " + typ
}

// typeHint shows what a value of typ looks like.
func typeHint(typ string) string {
	switch typ {
	case "[]inventory.Role":
		return "write roles: [control-plane] or roles: [worker]"
	case "[]string":
		return "write a YAML list, such as [a, b]"
	case "bool":
		return "write true or false, without quotes"
	case "[]*inventory.Host":
		return "hosts is a list: start each host with \"- name: ...\""
	}
	return ""
}

// knownTypes maps the Go type names yaml.v3 reports to the types, so that a
// hint can list the valid fields.
var knownTypes = map[string]reflect.Type{
	"inventory.Inventory": reflect.TypeFor[Inventory](),
	"inventory.Cluster":   reflect.TypeFor[Cluster](),
	"inventory.CNI":       reflect.TypeFor[CNI](),
	"inventory.Kubelet":   reflect.TypeFor[Kubelet](),
	"inventory.Runtime":   reflect.TypeFor[Runtime](),
	"inventory.Component": reflect.TypeFor[Component](),
	"inventory.SSH":       reflect.TypeFor[SSH](),
	"inventory.Bastion":   reflect.TypeFor[Bastion](),
	"inventory.Host":      reflect.TypeFor[Host](),
	"inventory.Taint":     reflect.TypeFor[Taint](),
}

// unknownFieldHint suggests the right field for an unknown one.
func unknownFieldHint(name, typ string) string {
	lower := strings.ToLower(name)
	switch {
	case lower == "password" || lower == "pass" || lower == "passwd":
		return "a password is never written in the inventory: set passwordEnv to the name of an environment variable that holds it, or passwordPrompt: true"
	case lower == "passphrase":
		return "set passphraseEnv to the name of an environment variable that holds the passphrase"
	}
	t, ok := knownTypes[typ]
	if !ok {
		return ""
	}
	fields := fieldNames(t, "yaml")
	if meant, ok := fieldSynonyms[strings.NewReplacer("_", "", "-", "").Replace(lower)]; ok {
		if slices.Contains(fields, meant) {
			return fmt.Sprintf("did you mean %q?", meant)
		}
		for _, o := range fieldHomes {
			if slices.Contains(fieldNames(o.typ, "yaml"), meant) {
				return fmt.Sprintf("did you mean %q? it belongs under %s", meant, o.where)
			}
		}
	}
	best, _ := nearestField(t, "yaml", lower)
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	// A field of another block, put at the wrong level.
	for _, o := range fieldHomes {
		if o.typ == t {
			continue
		}
		for _, f := range fieldNames(o.typ, "yaml") {
			if f == name {
				return fmt.Sprintf("%s belongs under %s", name, o.where)
			}
		}
	}
	// A part of a longer field's name ("version" for kubernetesVersion).
	var containing []string
	for _, f := range fields {
		if len(lower) >= 4 && strings.Contains(strings.ToLower(f), lower) {
			containing = append(containing, f)
		}
	}
	switch len(containing) {
	case 0:
	case 1:
		return fmt.Sprintf("did you mean %q?", containing[0])
	default:
		return "did you mean one of " + strings.Join(containing, ", ") + "?"
	}
	return "valid fields here: " + strings.Join(fields, ", ")
}

// fieldSynonyms maps names other tools use (lower case, without '-' and '_')
// to the field of the inventory that means the same, for hints: a near
// spelling can be a different field ("host" is two edits from "port").
var fieldSynonyms = map[string]string{
	"host": "address", "hostname": "address", "ip": "address", "ipaddress": "address", "addr": "address", "server": "address",
	"internalip": "internalAddress", "privateip": "internalAddress", "privateaddress": "internalAddress", "nodeip": "internalAddress",
	"key": "identityFiles", "keys": "identityFiles", "keyfile": "identityFiles", "identityfile": "identityFiles", "identity": "identityFiles",
	"privatekey": "identityFiles", "sshkey": "identityFiles", "keypath": "identityFiles",
	"username": "user", "login": "user", "sshuser": "user", "remoteuser": "user",
	"sshport":        "port",
	"knownhostsfile": "knownHosts", "userknownhostsfile": "knownHosts",
	"timeout":  "connectTimeout",
	"jumphost": "bastion", "jump": "bastion", "proxyjump": "bastion", "jumpbox": "bastion",
	"role": "roles", "label": "labels", "taint": "taints",
	"k8sversion": "kubernetesVersion", "endpoint": "controlPlaneEndpoint", "apiendpoint": "controlPlaneEndpoint",
}

// fieldHomes says where each block's fields go, for a field put at the wrong level.
var fieldHomes = []struct {
	typ   reflect.Type
	where string
}{
	{reflect.TypeFor[Inventory](), "the top level"},
	{reflect.TypeFor[Cluster](), "cluster:"},
	{reflect.TypeFor[SSH](), "ssh: (or a host's ssh:)"},
	{reflect.TypeFor[Host](), "each item of hosts:"},
	{reflect.TypeFor[Kubelet](), "cluster.kubelet:"},
	{reflect.TypeFor[CNI](), "cluster.cni:"},
}

// fieldNames lists the fields of struct type t by their tagKey tag.
func fieldNames(t reflect.Type, tagKey string) []string {
	_, names := nearestField(t, tagKey, "")
	return names
}

// nearestField returns the field of struct type t (by its tagKey tag) closest
// to name, case aside, when it is one edit away (a name of up to four letters)
// or two ("" when none), and every field's name.
func nearestField(t reflect.Type, tagKey, name string) (string, []string) {
	limit := 2
	if len(name) <= 4 {
		limit = 1
	}
	var fields []string
	best, bestDist := "", limit+1
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get(tagKey), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fields = append(fields, tag)
		if abs(len(name)-len(tag)) > limit {
			continue // farther than limit, and no long name costs a large table
		}
		if dist := editDistance(strings.ToLower(name), strings.ToLower(tag)); dist < bestDist {
			best, bestDist = tag, dist
		}
	}
	return best, fields
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// editDistance is the optimal string alignment distance between a and b:
// Levenshtein's, with a swap of two neighbours ("prot" for "port") one edit.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// locator finds the lines of fields in the document. A path is a list of
// mapping keys (string) and sequence indexes (int). A nil root (an inventory
// built in code) has no lines.
type locator struct{ root *yaml.Node }

// node returns the value node at path, or nil.
func (l locator) node(path ...any) *yaml.Node {
	n, _, ok := l.walk(path)
	if !ok {
		return nil
	}
	return n
}

// line returns the line of the field at path: the line of its key in a
// mapping, of the item in a sequence. When the field is absent it returns the
// line of its deepest present ancestor, so that a missing field points at
// the block it belongs to.
func (l locator) line(path ...any) int {
	_, line, _ := l.walk(path)
	return line
}

func (l locator) walk(path []any) (*yaml.Node, int, bool) {
	n := l.root
	if n == nil {
		return nil, 0, false
	}
	line := n.Line
	aliased := false // below an alias the line stays the alias's: the mistake is in using it there
	for _, p := range path {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n, aliased = n.Alias, true
		}
		switch p := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return nil, line, false
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					if !aliased {
						line = n.Content[i].Line
					}
					n, found = n.Content[i+1], true
					break
				}
			}
			if !found {
				return nil, line, false
			}
		case int:
			if n.Kind != yaml.SequenceNode || p < 0 || p >= len(n.Content) {
				return nil, line, false
			}
			n = n.Content[p]
			if !aliased {
				line = n.Line
			}
		}
	}
	return n, line, true
}

// each visits every node below the root with its path and the key that
// names it (nil for a list item), depth first; it stops when visit says so.
func (l locator) each(visit func(key, n *yaml.Node, path []any) bool) {
	var walk func(key, n *yaml.Node, path []any) bool
	walk = func(key, n *yaml.Node, path []any) bool {
		if path != nil && visit(key, n, path) {
			return true
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if walk(n.Content[i], n.Content[i+1], append(append([]any{}, path...), n.Content[i].Value)) {
					return true
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if walk(nil, c, append(append([]any{}, path...), i)) {
					return true
				}
			}
		}
		return false
	}
	if l.root != nil {
		walk(nil, l.root, nil)
	}
}

// findKey returns the path of the mapping key named name on line, or nil.
func (l locator) findKey(line int, name string) []any {
	var found []any
	l.each(func(key, _ *yaml.Node, path []any) bool {
		if key != nil && key.Line == line && key.Value == name {
			found = path
			return true
		}
		return false
	})
	return found
}

// findValue returns the path and node of the value on line that starts
// with prefix (a mapping value or a list item), the innermost scalar first;
// the path is nil when none.
func (l locator) findValue(line int, prefix string) ([]any, *yaml.Node) {
	var found []any
	var node *yaml.Node
	l.each(func(_, n *yaml.Node, path []any) bool {
		if n.Line == line && strings.HasPrefix(n.Value, prefix) && (node == nil || n.Kind == yaml.ScalarNode && len(path) > len(found)) {
			found, node = path, n
		}
		return false
	})
	return found, node
}

// findKind returns the path and node of the outermost node of kind on line.
func (l locator) findKind(line int, kind yaml.Kind) ([]any, *yaml.Node) {
	var found []any
	var node *yaml.Node
	l.each(func(_, n *yaml.Node, path []any) bool {
		if n.Line == line && n.Kind == kind {
			found, node = path, n
			return true
		}
		return false
	})
	return found, node
}

// findAlias returns the path and node of an alias whose anchor is on line.
func (l locator) findAlias(line int) ([]any, *yaml.Node) {
	var found []any
	var node *yaml.Node
	l.each(func(_, n *yaml.Node, path []any) bool {
		if n.Kind == yaml.AliasNode && n.Alias != nil && n.Alias.Line == line {
			found, node = path, n
			return true
		}
		return false
	})
	return found, node
}

var plainKeyRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// fieldString renders a path as "hosts[1].labels[\"a/b\"]".
func fieldString(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		case string:
			if !plainKeyRe.MatchString(p) {
				fmt.Fprintf(&b, "[%q]", p)
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p)
		}
	}
	return b.String()
}
