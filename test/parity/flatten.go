package parity

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
)

// Fields is a rendering flattened to path=value pairs, the unit of comparison.
type Fields map[string]string

// Difference is one field where kubeadm and kubeforge disagree.
type Difference struct {
	Key, Kubeadm, Kubeforge string
}

const absent = "<absent>"

func (d Difference) String() string {
	return fmt.Sprintf("%s: kubeadm %s, kubeforge %s", d.Key, d.Kubeadm, d.Kubeforge)
}

// Compare returns the fields where a and b differ, sorted by key.
func Compare(kubeadm, kubeforge Fields) []Difference {
	var out []Difference
	for k, v := range kubeadm {
		w, ok := kubeforge[k]
		if !ok {
			w = absent
		}
		if v != w {
			out = append(out, Difference{k, v, w})
		}
	}
	for k, w := range kubeforge {
		if _, ok := kubeadm[k]; !ok {
			out = append(out, Difference{k, absent, w})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// FlattenFiles flattens the files a host receives, each by its kind:
// certificates by subject, SANs and usages; keys by presence; YAML by field;
// the kubelet's flags file by flag.
func FlattenFiles(files map[string][]byte) (Fields, error) {
	f := Fields{}
	for p, data := range files {
		switch ext := path.Ext(p); {
		case ext == ".crt":
			if err := flattenCert(f, p, data); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
		case ext == ".key" || ext == ".pub":
			f[p] = "present"
		case ext == ".env":
			env := strings.TrimSpace(string(data))
			_, args, _ := strings.Cut(env, "=")
			flattenFlags(f, p, strings.Fields(strings.Trim(args, `"`)))
		case ext == ".yaml" || ext == ".conf":
			var v any
			if err := yaml.Unmarshal(data, &v); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			flatten(f, p, v)
		default:
			f[p] = "present"
		}
	}
	return f, nil
}

// FlattenObjects flattens API objects, each under kind/namespace/name.
func FlattenObjects(objs []runtime.Object) (Fields, error) {
	f := Fields{}
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		kind := o.GetObjectKind().GroupVersionKind().Kind
		if kind == "" {
			kind = fmt.Sprintf("%T", o)
			kind = kind[strings.LastIndex(kind, ".")+1:]
		}
		if kind == "Secret" {
			delete(v, "data") // never printed; a bootstrap token's values are random anyway
			delete(v, "stringData")
		}
		delete(v, "status")
		delete(v, "apiVersion")
		delete(v, "kind")
		if md, ok := v["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
			delete(md, "name")
			delete(md, "namespace")
		}
		key := kind + "/" + m.GetName()
		if m.GetNamespace() != "" {
			key = kind + "/" + m.GetNamespace() + "/" + m.GetName()
		}
		f[key] = "present"
		flatten(f, key, v)
	}
	return f, nil
}

// flatten writes v under key. Lists of named things are keyed by name, a
// command by flag; other scalar lists are sorted; strings that hold YAML or
// certificates are opened.
func flatten(f Fields, key string, v any) {
	switch t := v.(type) {
	case map[string]any:
		if len(t) == 0 {
			return // an empty map is the same as none
		}
		for k, e := range t {
			flatten(f, key+"."+k, e)
		}
	case []any:
		if len(t) == 0 {
			return
		}
		if strings.HasSuffix(key, ".command") || strings.HasSuffix(key, ".args") {
			var s []string
			for _, e := range t {
				s = append(s, fmt.Sprint(e))
			}
			flattenFlags(f, key, s)
			return
		}
		named, scalars := true, true
		for _, e := range t {
			m, ok := e.(map[string]any)
			if !ok || m["name"] == nil {
				named = false
			}
			if ok {
				scalars = false
			}
		}
		switch {
		case named:
			for _, e := range t {
				m := e.(map[string]any)
				flatten(f, fmt.Sprintf("%s[%v]", key, m["name"]), m)
			}
		case scalars:
			var s []string
			for _, e := range t {
				s = append(s, fmt.Sprint(e))
			}
			sort.Strings(s)
			f[key] = strings.Join(s, ",")
		default:
			for i, e := range t {
				flatten(f, fmt.Sprintf("%s[%d]", key, i), e)
			}
		}
	case string:
		if strings.Contains(t, "\n") {
			var inner map[string]any
			if err := yaml.Unmarshal([]byte(t), &inner); err == nil && (inner["apiVersion"] != nil || inner["kind"] != nil) {
				flatten(f, key, inner)
				return
			}
		}
		if strings.HasSuffix(key, "-data") {
			f[key] = describeData(t)
			return
		}
		f[key] = t
	case nil:
	default:
		f[key] = fmt.Sprint(t)
	}
}

// flattenFlags keys a command line by flag: the program as [0], each
// --flag=value by its flag.
func flattenFlags(f Fields, key string, args []string) {
	for i, a := range args {
		if !strings.HasPrefix(a, "--") {
			f[fmt.Sprintf("%s[%d]", key, i)] = a
			continue
		}
		name, val, _ := strings.Cut(a, "=")
		f[key+"."+name] = val
	}
}

// describeData opens base64 data: a certificate by its subject, a key by
// its presence (their bytes differ between any two renderings).
func describeData(s string) string {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return s
	}
	blk, _ := pem.Decode(b)
	switch {
	case blk == nil:
		return "data"
	case blk.Type == "CERTIFICATE":
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return "bad certificate"
		}
		return "certificate " + c.Subject.String()
	default:
		return blk.Type
	}
}

var keyUsages = map[x509.KeyUsage]string{
	x509.KeyUsageDigitalSignature: "DigitalSignature", x509.KeyUsageContentCommitment: "ContentCommitment",
	x509.KeyUsageKeyEncipherment: "KeyEncipherment", x509.KeyUsageDataEncipherment: "DataEncipherment",
	x509.KeyUsageKeyAgreement: "KeyAgreement", x509.KeyUsageCertSign: "CertSign", x509.KeyUsageCRLSign: "CRLSign",
}

var extUsages = map[x509.ExtKeyUsage]string{x509.ExtKeyUsageServerAuth: "ServerAuth", x509.ExtKeyUsageClientAuth: "ClientAuth"}

func flattenCert(f Fields, key string, data []byte) error {
	blk, _ := pem.Decode(data)
	if blk == nil {
		return fmt.Errorf("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return err
	}
	f[key+".subject"] = c.Subject.String()
	f[key+".issuer"] = c.Issuer.String()
	f[key+".isCA"] = fmt.Sprint(c.IsCA)
	f[key+".keyAlgorithm"] = c.PublicKeyAlgorithm.String()
	f[key+".validity"] = (c.NotAfter.Sub(c.NotBefore) + 12*time.Hour).Truncate(24 * time.Hour).String()
	var ku, eku, ips []string
	for bit, n := range keyUsages {
		if c.KeyUsage&bit != 0 {
			ku = append(ku, n)
		}
	}
	for _, u := range c.ExtKeyUsage {
		eku = append(eku, extUsages[u])
	}
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	dns := append([]string(nil), c.DNSNames...)
	for _, l := range [][]string{ku, eku, ips, dns} {
		sort.Strings(l)
	}
	f[key+".keyUsage"] = strings.Join(ku, ",")
	f[key+".extKeyUsage"] = strings.Join(eku, ",")
	f[key+".ipSANs"] = strings.Join(ips, ",")
	f[key+".dnsSANs"] = strings.Join(dns, ",")
	return nil
}
