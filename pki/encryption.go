package pki

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"github.com/kubeforge/kubeforge/inventory"
)

// EncryptionConfigPath is the API server's EncryptionConfiguration on each
// control plane (0600; its directory is mounted into the API server).
var EncryptionConfigPath = path.Join(KubernetesDir, "encryption", "config.yaml")

// encryptionFile is the EncryptionConfiguration in the state dir's pki/: the
// keys of encryption at rest, in the order the API servers use them.
const encryptionFile = "encryption-config.yaml"

// Identity is the provider that stores data as it is: kept among the
// providers so the API servers read what was written before encryption was
// turned on.
const Identity = "identity"

// EncryptionKey is one provider of the encryption configuration: a key of
// aescbc, aesgcm or secretbox, or the identity provider (no name, no secret).
type EncryptionKey struct {
	Provider string
	Name     string
	Secret   []byte
}

// Prefix is what etcd holds at the start of a value written with k:
// "k8s:enc:secretbox:v1:NAME:"; "" for the identity provider.
func (k EncryptionKey) Prefix() string {
	if k.Provider == Identity {
		return ""
	}
	return "k8s:enc:" + k.Provider + ":v1:" + k.Name + ":"
}

// String names the key without its secret.
func (k EncryptionKey) String() string {
	if k.Provider == Identity {
		return Identity
	}
	return k.Provider + "/" + k.Name
}

// NewEncryptionKey returns a key of provider named after now: secret when
// given (the inventory's keyFile), else 32 random bytes.
func NewEncryptionKey(provider string, secret []byte, now time.Time) (EncryptionKey, error) {
	sizes, ok := inventory.EncryptionKeySizes[provider]
	if !ok {
		return EncryptionKey{}, fmt.Errorf("new encryption key: unsupported provider %q", provider)
	}
	if secret == nil {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return EncryptionKey{}, fmt.Errorf("new encryption key: %w", err)
		}
	}
	if !slices.Contains(sizes, len(secret)) {
		return EncryptionKey{}, fmt.Errorf("new encryption key: a %s key is %v bytes, not %d", provider, sizes, len(secret))
	}
	return EncryptionKey{Provider: provider, Name: "key-" + now.UTC().Format("20060102T150405Z"), Secret: secret}, nil
}

// EncryptionKeys returns the encryption providers in order (the first
// encrypts writes); nil when the cluster has no encryption at rest.
func (b *Bundle) EncryptionKeys() []EncryptionKey { return slices.Clone(b.encryption) }

// SetEncryptionKeys replaces the encryption providers (Save writes them).
func (b *Bundle) SetEncryptionKeys(keys []EncryptionKey) {
	b.encryption = slices.Clone(keys)
	b.encryptionDirty = true
}

// EncryptionResources returns the resources the saved configuration
// encrypts; nil when none was saved.
func (b *Bundle) EncryptionResources() []string { return slices.Clone(b.encryptionResources) }

// SetEncryptionResources records the resources encrypted (Save writes them
// with the keys).
func (b *Bundle) SetEncryptionResources(resources []string) {
	if !slices.Equal(b.encryptionResources, resources) {
		b.encryptionResources = slices.Clone(resources)
		b.encryptionDirty = true
	}
}

// EncryptionConfig renders the API server's EncryptionConfiguration for
// resources with b's providers; nil when b has none.
func (b *Bundle) EncryptionConfig(resources []string) ([]byte, error) {
	if len(b.encryption) == 0 {
		return nil, nil
	}
	return encryptionConfig(b.encryption, resources)
}

func encryptionConfig(keys []EncryptionKey, resources []string) ([]byte, error) {
	providers := make([]apiserverv1.ProviderConfiguration, 0, len(keys))
	for _, k := range keys {
		key := []apiserverv1.Key{{Name: k.Name, Secret: base64.StdEncoding.EncodeToString(k.Secret)}}
		var p apiserverv1.ProviderConfiguration
		switch k.Provider {
		case inventory.EncryptionAESCBC:
			p.AESCBC = &apiserverv1.AESConfiguration{Keys: key}
		case inventory.EncryptionAESGCM:
			p.AESGCM = &apiserverv1.AESConfiguration{Keys: key}
		case inventory.EncryptionSecretbox:
			p.Secretbox = &apiserverv1.SecretboxConfiguration{Keys: key}
		case Identity:
			p.Identity = &apiserverv1.IdentityConfiguration{}
		default:
			return nil, fmt.Errorf("render encryption config: unsupported provider %q", k.Provider)
		}
		providers = append(providers, p)
	}
	cfg := apiserverv1.EncryptionConfiguration{
		TypeMeta:  metav1.TypeMeta{APIVersion: apiserverv1.SchemeGroupVersion.String(), Kind: "EncryptionConfiguration"},
		Resources: []apiserverv1.ResourceConfiguration{{Resources: resources, Providers: providers}},
	}
	data, err := yaml.Marshal(&cfg)
	if err != nil {
		return nil, fmt.Errorf("render encryption config: %w", err)
	}
	return data, nil
}

// loadEncryption reads dir's encryption configuration: its providers in
// order, each key checked for its provider's length. A missing file is no
// encryption.
func loadEncryption(dir string) ([]EncryptionKey, []string, error) {
	p := filepath.Join(dir, encryptionFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", p, err)
	}
	var cfg apiserverv1.EncryptionConfiguration
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", p, err)
	}
	if len(cfg.Resources) != 1 {
		return nil, nil, fmt.Errorf("load %s: %d resource groups, want the one kubeforge writes", p, len(cfg.Resources))
	}
	var keys []EncryptionKey
	for i, pc := range cfg.Resources[0].Providers {
		k, err := providerKey(pc)
		if err != nil {
			return nil, nil, fmt.Errorf("load %s: providers[%d]: %w", p, i, err)
		}
		keys = append(keys, k)
	}
	return keys, cfg.Resources[0].Resources, nil
}

func providerKey(pc apiserverv1.ProviderConfiguration) (EncryptionKey, error) {
	var provider string
	var ks []apiserverv1.Key
	switch {
	case pc.Identity != nil:
		return EncryptionKey{Provider: Identity}, nil
	case pc.AESCBC != nil:
		provider, ks = inventory.EncryptionAESCBC, pc.AESCBC.Keys
	case pc.AESGCM != nil:
		provider, ks = inventory.EncryptionAESGCM, pc.AESGCM.Keys
	case pc.Secretbox != nil:
		provider, ks = inventory.EncryptionSecretbox, pc.Secretbox.Keys
	default:
		return EncryptionKey{}, errors.New("a provider kubeforge does not manage (aescbc, aesgcm, secretbox, identity)")
	}
	if len(ks) != 1 || ks[0].Name == "" {
		return EncryptionKey{}, fmt.Errorf("%s: want one named key, have %d", provider, len(ks))
	}
	secret, err := base64.StdEncoding.DecodeString(ks[0].Secret)
	if err != nil {
		return EncryptionKey{}, fmt.Errorf("%s key %s: not base64", provider, ks[0].Name)
	}
	if !slices.Contains(inventory.EncryptionKeySizes[provider], len(secret)) {
		return EncryptionKey{}, fmt.Errorf("%s key %s: %d bytes, want one of %v", provider, ks[0].Name, len(secret), inventory.EncryptionKeySizes[provider])
	}
	return EncryptionKey{Provider: provider, Name: ks[0].Name, Secret: secret}, nil
}

// saveEncryption writes the providers and the resources to dir (0600 from the start).
func saveEncryption(dir string, keys []EncryptionKey, resources []string) error {
	if len(resources) == 0 {
		resources = []string{"secrets"}
	}
	data, err := encryptionConfig(keys, resources)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save encryption config: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, encryptionFile), data, 0o600)
}
