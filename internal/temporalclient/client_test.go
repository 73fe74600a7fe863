package temporalclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/config"
)

// writeCert makes a self-signed certificate and its key in dir.
func writeCert(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "archiver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	_ = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certPath, keyPath
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	base := config.Config{TemporalAddress: "ns.acct.tmprl.cloud:7233", TemporalNamespace: "ns.acct"}

	plain, err := Options(base)
	if err != nil || plain.ConnectionOptions.TLS != nil || plain.Credentials != nil {
		t.Fatalf("no TLS configured: %+v, %v", plain.ConnectionOptions.TLS, err)
	}

	mtls := base
	mtls.TemporalTLSCert, mtls.TemporalTLSKey, mtls.TemporalTLSCA, mtls.TemporalTLSServerName = cert, key, cert, "ns.acct.tmprl.cloud"
	o, err := Options(mtls)
	if err != nil {
		t.Fatal(err)
	}
	if tc := o.ConnectionOptions.TLS; tc == nil || len(tc.Certificates) != 1 || tc.RootCAs == nil || tc.ServerName != "ns.acct.tmprl.cloud" {
		t.Fatalf("mTLS options: %+v", o.ConnectionOptions.TLS)
	}

	apiKey := base
	apiKey.TemporalAPIKey = "secret-api-key"
	o, err = Options(apiKey)
	if err != nil || o.ConnectionOptions.TLS == nil || o.Credentials == nil {
		t.Fatalf("API key options: TLS %v, credentials %v, %v", o.ConnectionOptions.TLS, o.Credentials, err)
	}

	bad := base
	bad.TemporalTLSCert, bad.TemporalTLSKey = cert, filepath.Join(dir, "missing.pem")
	if _, err := Options(bad); err == nil || !strings.Contains(err.Error(), "TEMPORAL_TLS_KEY") {
		t.Fatalf("missing key file: %v", err)
	}
	notPEM := base
	notPEM.TemporalTLSCA = key + ".none"
	_ = os.WriteFile(notPEM.TemporalTLSCA, []byte("not a certificate"), 0o600)
	if _, err := Options(notPEM); err == nil || !strings.Contains(err.Error(), "TEMPORAL_TLS_CA") {
		t.Fatalf("CA without PEM: %v", err)
	}
}
