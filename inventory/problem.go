package inventory

import (
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with an inventory, located in its file.
type Problem struct {
	File    string // the inventory file; empty when built in code
	Line    int    // 1-based line; 0 when unknown
	Field   string // the field, as a YAML path: "hosts[1].address"; empty for file-level problems
	Message string
	Hint    string // what to do about it; may be empty
	Warning bool   // a warning does not make the inventory invalid
}

// String renders p as "file:line: field: message (hint: ...)", prefixing
// "warning: " to warnings.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	} else if p.Line > 0 {
		b.WriteString("line " + strconv.Itoa(p.Line) + ": ")
	}
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Message)
	if p.Hint != "" {
		b.WriteString(" (hint: " + p.Hint + ")")
	}
	return b.String()
}

// ValidationError is returned by Load, Parse and Validate when an inventory has
// at least one problem that is not a warning. Problems holds every problem found
// (errors and warnings), ordered by line.
type ValidationError struct {
	Problems []Problem
}

// Error renders every problem, one per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Errors returns the problems that are not warnings.
func (e *ValidationError) Errors() []Problem {
	var out []Problem
	for _, p := range e.Problems {
		if !p.Warning {
			out = append(out, p)
		}
	}
	return out
}

// sortProblems orders problems by line, keeping the order of discovery
// for problems on the same line.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
}
