package csrapprover

import (
	"context"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

// decide records its verdict on the CSR, with an Event for a denial, and
// waits a while for a Node that does not exist yet.
func TestDecide(t *testing.T) {
	ctx := context.Background()
	good := kubeletRequest().csr(t)
	good.Name = "good"
	bad := kubeletRequest()
	bad.ips = []string{"10.250.0.99"}
	badCSR := bad.csr(t)
	badCSR.Name = "bad"
	orphan := kubeletRequest()
	orphan.user, orphan.cn = "system:node:w9", "system:node:w9"
	orphanCSR := orphan.csr(t)
	orphanCSR.Name = "orphan"
	cs := fake.NewClientset(w1, good, badCSR, orphanCSR)
	rec := record.NewFakeRecorder(10)
	a := &approver{cs: cs, recorder: rec, firstSeen: map[string]time.Time{}}

	verdict := func(name string) (certificatesv1.RequestConditionType, string) {
		csr, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(csr.Status.Conditions) != 1 {
			return "", ""
		}
		return csr.Status.Conditions[0].Type, csr.Status.Conditions[0].Message
	}
	for _, name := range []string{"good", "bad"} {
		if retry, err := a.decide(ctx, name); err != nil || retry != 0 {
			t.Fatalf("decide(%s) = %s, %v", name, retry, err)
		}
	}
	if typ, _ := verdict("good"); typ != certificatesv1.CertificateApproved {
		t.Errorf("good CSR: %q, want Approved", typ)
	}
	if typ, msg := verdict("bad"); typ != certificatesv1.CertificateDenied || !strings.Contains(msg, "10.250.0.99") {
		t.Errorf("bad CSR: %q %q, want Denied naming the address", typ, msg)
	}
	select {
	case e := <-rec.Events:
		if !strings.Contains(e, "CSRDenied") || !strings.Contains(e, "10.250.0.99") {
			t.Errorf("event %q", e)
		}
	default:
		t.Error("no Event for the denial")
	}
	// Decided CSRs are left alone.
	if retry, err := a.decide(ctx, "good"); err != nil || retry != 0 {
		t.Errorf("decide(good) again = %s, %v", retry, err)
	}

	if retry, err := a.decide(ctx, "orphan"); err != nil || retry == 0 {
		t.Fatalf("decide(orphan) = %s, %v; want a retry while its Node may still come", retry, err)
	}
	if typ, _ := verdict("orphan"); typ != "" {
		t.Fatalf("orphan CSR decided at once: %s", typ)
	}
	a.firstSeen["orphan"] = time.Now().Add(-nodeWait)
	if retry, err := a.decide(ctx, "orphan"); err != nil || retry != 0 {
		t.Fatalf("decide(orphan) after the wait = %s, %v", retry, err)
	}
	if typ, msg := verdict("orphan"); typ != certificatesv1.CertificateDenied || !strings.Contains(msg, "no Node w9") {
		t.Errorf("orphan CSR: %q %q, want Denied for the missing Node", typ, msg)
	}
}
