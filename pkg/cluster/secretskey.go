package cluster

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/secretskey"
)

// SecretsKeyRotator runs `secrets rotate-key` through this master's etcd
// member; its progress goes to out.
func (a *Admin) SecretsKeyRotator(out io.Writer) *secretskey.Rotator {
	return &secretskey.Rotator{Client: a.cli, Layout: a.Config.Layout(), Out: out}
}

// secretsKeyStatus is the encryption part of status; its problems are
// warnings (status must still show the rest).
func (a *Admin) secretsKeyStatus(ctx context.Context, warnings []string) (*secretskey.Status, []string) {
	st, err := secretskey.ReadStatus(ctx, a.cli, a.Config.Layout())
	if err != nil {
		return nil, append(warnings, "secrets encryption: "+err.Error())
	}
	if r := st.Rotation; r != nil {
		warnings = append(warnings, fmt.Sprintf("a secrets-key rotation from %s to %s stopped or runs at phase %s; run k8s-master secrets rotate-key to finish it", r.From, r.To, r.Phase))
	}
	var behind []string
	for _, m := range st.Masters {
		if !m.Current {
			behind = append(behind, m.Name)
		}
	}
	if len(behind) > 0 && st.Rotation == nil {
		warnings = append(warnings, fmt.Sprintf("masters %s have not loaded the current encryption configuration (keys %s); are they running?", strings.Join(behind, ", "), strings.Join(st.Keys, ", ")))
	}
	return st, warnings
}
