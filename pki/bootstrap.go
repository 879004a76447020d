package pki

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// BootstrapToken is a kubeadm bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}.
// String returns the whole token, for use; log it only through slog (LogValue)
// or Redacted, which hide the secret.
type BootstrapToken struct{ ID, Secret string }

// NewBootstrapToken makes a random token with cluster-bootstrap's generator.
func NewBootstrapToken() (BootstrapToken, error) {
	s, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return BootstrapToken{}, fmt.Errorf("generate bootstrap token: %w", err)
	}
	return ParseBootstrapToken(s)
}

// ParseBootstrapToken parses "id.secret". The error never repeats the secret.
func ParseBootstrapToken(s string) (BootstrapToken, error) {
	m := bootstraputil.BootstrapTokenRegexp.FindStringSubmatch(s)
	if len(m) != 3 {
		return BootstrapToken{}, fmt.Errorf("parse bootstrap token: not of the form %s", bootstrapapi.BootstrapTokenPattern)
	}
	return BootstrapToken{ID: m[1], Secret: m[2]}, nil
}

// String returns the full token "id.secret" (a credential: do not log it).
func (t BootstrapToken) String() string { return bootstraputil.TokenFromIDAndSecret(t.ID, t.Secret) }

// Redacted returns "id.****************", safe to show.
func (t BootstrapToken) Redacted() string { return t.ID + "." + strings.Repeat("*", len(t.Secret)) }

// LogValue makes slog print the redacted token.
func (t BootstrapToken) LogValue() slog.Value { return slog.StringValue(t.Redacted()) }

var _ slog.LogValuer = BootstrapToken{}

// BootstrapTokenSecret is the kube-system/bootstrap-token-<id> Secret as kubeadm
// writes it: both usages, the default node-token group, and an RFC 3339
// expiration now+ttl (none when ttl <= 0).
func BootstrapTokenSecret(t BootstrapToken, ttl time.Duration, now time.Time, description string) *corev1.Secret {
	data := map[string][]byte{
		bootstrapapi.BootstrapTokenIDKey:          []byte(t.ID),
		bootstrapapi.BootstrapTokenSecretKey:      []byte(t.Secret),
		bootstrapapi.BootstrapTokenExtraGroupsKey: []byte(NodeBootstrapTokenAuthGroup),
	}
	if description != "" {
		data[bootstrapapi.BootstrapTokenDescriptionKey] = []byte(description)
	}
	if ttl > 0 {
		data[bootstrapapi.BootstrapTokenExpirationKey] = []byte(now.Add(ttl).UTC().Format(time.RFC3339))
	}
	for _, u := range bootstrapapi.KnownTokenUsages {
		data[bootstrapapi.BootstrapTokenUsagePrefix+u] = []byte("true")
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      bootstraputil.BootstrapTokenSecretName(t.ID),
			Namespace: metav1.NamespaceSystem,
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: data,
	}
}

// ClusterInfoKubeconfig is the "kubeconfig" value of kube-public/cluster-info: one
// unnamed cluster (server and CA), no user, as kubeadm writes it.
func ClusterInfoKubeconfig(caPEM []byte, server string) ([]byte, error) {
	cfg := clientcmdapi.Config{Clusters: map[string]*clientcmdapi.Cluster{
		"": {Server: server, CertificateAuthorityData: caPEM},
	}}
	data, err := clientcmd.Write(cfg)
	if err != nil {
		return nil, fmt.Errorf("write cluster-info kubeconfig: %w", err)
	}
	return data, nil
}

// SignClusterInfo is the jws-kubeconfig-<id> value of cluster-info for token t
// (the bootstrap signer's detached JWS).
func SignClusterInfo(kubeconfig []byte, t BootstrapToken) (string, error) {
	sig, err := jws.ComputeDetachedSignature(string(kubeconfig), t.ID, t.Secret)
	if err != nil {
		return "", fmt.Errorf("sign cluster-info for token %s: %w", t.ID, err)
	}
	return sig, nil
}

// ClusterInfoSignatureKey is the cluster-info data key that holds t's signature.
func ClusterInfoSignatureKey(t BootstrapToken) string {
	return bootstrapapi.JWSSignatureKeyPrefix + t.ID
}

// BootstrapKubeconfig is bootstrap-kubelet.conf: cluster "kubernetes" at server,
// user tls-bootstrap-token-user authenticating with token t (as kubeadm join).
func BootstrapKubeconfig(caPEM []byte, server string, t BootstrapToken) ([]byte, error) {
	cfg := basicKubeconfig(BootstrapClusterName, server, TokenUser, caPEM)
	cfg.AuthInfos[TokenUser] = &clientcmdapi.AuthInfo{Token: t.String()}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("write bootstrap kubeconfig: %w", err)
	}
	return data, nil
}
