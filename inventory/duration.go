package inventory

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML decodes a duration written as a string such as "30s" or "8760h".
// A malformed value is reported as a *yaml.TypeError so that decoding goes on
// and every problem of the file is reported together.
func (d *Duration) UnmarshalYAML(value *yaml.Node) error {
	if value.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a duration must be a string such as \"30s\" or \"8760h\"", value.Line)}}
	}
	if value.Tag == "!!null" || value.Value == "" {
		d.Duration = 0
		return nil
	}
	v, err := time.ParseDuration(value.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration %q: a duration is a number with a unit, such as \"30s\", \"5m\" or \"8760h\"", value.Line, value.Value)}}
	}
	d.Duration = v
	return nil
}

// MarshalYAML encodes d as a string such as "10s".
func (d Duration) MarshalYAML() (any, error) {
	return d.Duration.String(), nil
}
