// Package logging sends the components' logs (klog for Kubernetes, zap for
// etcd) to one place: a size-rotated file, or standard error. The short
// progress lines a person watches go to standard output separately.
package logging

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/natefinch/lumberjack.v2"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// Sink is where logs go.
type Sink struct {
	Writer io.Writer
	// Zap is etcd's logger, writing to the same place.
	Zap   *zap.Logger
	close func() error
}

// Setup points klog and a new zap logger at path ("-" is standard error)
// with the given klog verbosity. Kubernetes keeps klog's state in globals,
// so this is called once per process.
func Setup(path string, verbosity int) (*Sink, error) {
	var w io.Writer = os.Stderr
	closeFn := func() error { return nil }
	if path != "-" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("cannot create the log directory for %s: %w; %w", path, err, config.Hint("pass {log-file}"))
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("cannot open log file %s: %w; %w", path, err, config.Hint("pass {log-file}"))
		}
		f.Close()
		lj := &lumberjack.Logger{Filename: path, MaxSize: 100, MaxBackups: 5, Compress: true}
		w, closeFn = lj, lj.Close
	}

	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", strconv.Itoa(verbosity))
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(w)

	level := zapcore.InfoLevel
	if verbosity < 2 {
		// etcd is chatty at info about every routine step; keep its
		// warnings and errors unless the operator asked for detail.
		level = zapcore.WarnLevel
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(w), level)
	return &Sink{Writer: w, Zap: zap.New(core).With(zap.String("component", "etcd")), close: closeFn}, nil
}

// Close flushes and closes the log file.
func (s *Sink) Close() error {
	klog.Flush()
	_ = s.Zap.Sync()
	return s.close()
}
