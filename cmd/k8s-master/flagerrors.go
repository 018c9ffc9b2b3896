package main

import (
	"strings"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// flagMessage words err for the command line. Library packages name a
// setting by its config-file key (config.SettingError); here, where the
// user typed flags, each such setting is named by its flag instead.
func flagMessage(err error) string {
	msg := err.Error()
	for _, se := range config.SettingErrors(err) {
		msg = strings.Replace(msg, se.Error(), se.Format(flagName), 1)
	}
	return msg
}

// flagName is the flag of a config-file key: -v for the one shorthand,
// --key for the rest.
func flagName(key string) string {
	if len(key) == 1 {
		return "-" + key
	}
	return "--" + key
}
