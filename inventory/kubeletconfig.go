package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"
)

// MergeKubeletConfig applies overrides (an inventory's cluster.kubelet.config,
// field names as in kubelet.config.k8s.io/v1beta1) to base as an RFC 7386 JSON
// merge patch, so objects merge, other values replace and a null unsets a
// field, and decodes the result as strictly as the kubelet reads its config:
// a field name must match in case, and an unknown field or a value of the
// wrong type is an error. Its errors are *KubeletConfigError. Validate checks
// kubelet.config with it and the renderer builds the kubelet's config with it,
// so what validates renders.
func MergeKubeletConfig(base *kubeletv1beta1.KubeletConfiguration, overrides map[string]any) (*kubeletv1beta1.KubeletConfiguration, error) {
	if len(overrides) == 0 {
		return base, nil
	}
	var fixed []KubeletConfigProblem
	for _, k := range []string{"apiVersion", "kind"} {
		if _, ok := overrides[k]; ok {
			fixed = append(fixed, KubeletConfigProblem{Field: k, Message: fmt.Sprintf("%q cannot be overridden", k)})
		}
	}
	if len(fixed) > 0 {
		return nil, &KubeletConfigError{Problems: fixed}
	}
	raw, err := json.Marshal(base)
	if err != nil {
		return nil, fmt.Errorf("marshal kubelet configuration: %w", err)
	}
	patch, err := json.Marshal(overrides)
	if err != nil {
		return nil, &KubeletConfigError{Problems: []KubeletConfigProblem{{Message: err.Error()}}}
	}
	merged, err := jsonpatch.MergePatch(raw, patch)
	if err != nil {
		return nil, fmt.Errorf("merge kubelet config overrides: %w", err)
	}
	out := &kubeletv1beta1.KubeletConfiguration{}
	strict, err := sigsjson.UnmarshalStrict(merged, out)
	if err != nil {
		return nil, &KubeletConfigError{Problems: []KubeletConfigProblem{decodeProblem(err)}}
	}
	if len(strict) > 0 {
		e := &KubeletConfigError{}
		for _, s := range strict {
			p := KubeletConfigProblem{Message: s.Error()}
			var fe sigsjson.FieldError
			if errors.As(s, &fe) {
				p.Field, p.Unknown = fe.FieldPath(), strings.HasPrefix(s.Error(), "unknown field")
			}
			e.Problems = append(e.Problems, p)
		}
		return nil, e
	}
	return out, nil
}

// KubeletConfigError is a cluster.kubelet.config that does not make a
// KubeletConfiguration, one problem per offending field.
type KubeletConfigError struct {
	Problems []KubeletConfigProblem
}

// KubeletConfigProblem is one thing wrong with a cluster.kubelet.config.
type KubeletConfigProblem struct {
	// Field is the JSON path of the field in the KubeletConfiguration
	// ("maxPods", "authentication.webhook.cacheTTL"); empty when unknown.
	Field   string
	Unknown bool   // the field is not one of KubeletConfiguration's
	Message string // what is wrong: unknown field "maxpods"
	Want    string // for a value of the wrong type, the type wanted ("int32")
	Got     string // and what was given ("string", "number 1.5")
}

func (e *KubeletConfigError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Message
		if p.Field != "" && !p.Unknown {
			msgs[i] = p.Field + ": " + p.Message
		}
	}
	return strings.Join(msgs, "; ")
}

// typeErrorRe is the message of a sigs.k8s.io/json type error: the Go struct
// holding the field, then the field's path from the root.
var typeErrorRe = regexp.MustCompile(`^json: cannot unmarshal (.+) into Go struct field \w+\.(\S+) of type (\S+)$`)

// decodeProblem describes an error of the strict decoder that stopped it.
func decodeProblem(err error) KubeletConfigProblem {
	msg := err.Error()
	if m := typeErrorRe.FindStringSubmatch(msg); m != nil {
		return KubeletConfigProblem{Field: m[2], Got: m[1], Want: m[3],
			Message: fmt.Sprintf("a %s value where KubeletConfiguration wants %s", m[1], m[3])}
	}
	return KubeletConfigProblem{Message: strings.TrimPrefix(msg, "json: ")}
}

// kubeletConfigPath turns a JSON field path ("a.b[2].c") into a path.
func kubeletConfigPath(field string) path {
	var out path
	for _, part := range strings.Split(field, ".") {
		name, rest, _ := strings.Cut(part, "[")
		out = append(out, name)
		for rest != "" {
			var idx string
			idx, rest, _ = strings.Cut(rest, "]")
			rest = strings.TrimPrefix(rest, "[")
			if i, err := strconv.Atoi(idx); err == nil {
				out = append(out, i)
			}
		}
	}
	return out
}

// kubeletStructAt returns the struct type that holds the field at the JSON
// path field of a KubeletConfiguration, or nil.
func kubeletStructAt(field string) reflect.Type {
	t := reflect.TypeFor[kubeletv1beta1.KubeletConfiguration]()
	parts := strings.Split(field, ".")
	for _, part := range parts[:len(parts)-1] {
		name, _, _ := strings.Cut(part, "[")
		f, ok := jsonField(t, name)
		if !ok {
			return nil
		}
		t = f.Type
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
	}
	return t
}

// jsonField finds the field of struct t whose JSON name is name, looking
// into embedded structs.
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name {
			return f, true
		}
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			if g, ok := jsonField(f.Type, name); ok {
				return g, true
			}
		}
	}
	return reflect.StructField{}, false
}
