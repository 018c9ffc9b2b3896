package cluster

import (
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/etcd"
)

// status explains NOSPACE, and names the members whose data itself fills
// the quota (where only deleting helps).
func TestSpaceAlarm(t *testing.T) {
	ms := []etcd.MemberStatus{
		{Name: "m1", DBSize: 33 << 20, DBSizeInUse: 31 << 20, DBSizeQuota: 32 << 20},
		{Name: "m2", DBSize: 33 << 20, DBSizeInUse: 10 << 20, DBSizeQuota: 32 << 20},
	}
	a := spaceAlarm(ms)
	if a.Alarm != "NOSPACE" || !strings.Contains(a.What, "refuses writes") || !strings.Contains(a.Do, "delete objects") || !strings.Contains(a.Do, "--etcd-quota-bytes") {
		t.Errorf("alarm %+v", a)
	}
	if !strings.Contains(a.What, "on m1 the data itself fills 96% of the quota") || strings.Contains(a.What, "m2") {
		t.Errorf("what: %s", a.What)
	}
}
