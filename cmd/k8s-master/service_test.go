package main

import (
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/config"
)

func TestServiceInitArgs(t *testing.T) {
	cmd := newRootCommand()
	initCmd, _, err := cmd.Find([]string{"init"})
	if err != nil {
		t.Fatal(err)
	}
	if err := initCmd.ParseFlags([]string{"--name", "m1", "--apiserver-san", "a.example.com", "--apiserver-san", "b,c", "--apiserver-port=7443"}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(serviceInitArgs("/usr/bin/k8s-master", initCmd.Flags()), " ")
	want := "/usr/bin/k8s-master init --foreground --apiserver-port=7443 --apiserver-san=a.example.com --apiserver-san=b --apiserver-san=c --name=m1"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if err := checkServiceFlags(initCmd.Flags()); err != nil {
		t.Errorf("recorded settings refused: %v", err)
	}
}

func TestCheckServiceFlags(t *testing.T) {
	for _, args := range [][]string{{"--data-dir", "/srv"}, {"--log-file", "-"}, {"-v", "3"}, {"--config", "/tmp/other.yaml"}} {
		configFile = config.DefaultConfigFile
		root := newRootCommand()
		initCmd, _, _ := root.Find([]string{"init"})
		if err := initCmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		err := checkServiceFlags(initCmd.Flags())
		if err == nil || !strings.Contains(err.Error(), config.DefaultConfigFile) || !strings.Contains(err.Error(), "--foreground") {
			t.Errorf("%v: error = %v", args, err)
		}
	}
	configFile = config.DefaultConfigFile
}
