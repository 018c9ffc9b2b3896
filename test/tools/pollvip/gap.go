package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MaxGap reads a poll log and returns the outage around a fault at from:
// the time between the last success started before from and the first
// success started after the last failure in [from, to]. A window with no
// failure has no outage.
func MaxGap(r io.Reader, from, to int64) (time.Duration, error) {
	var lastOKBefore, lastFail int64
	var oks []int64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		ts, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad log line %q", sc.Text())
		}
		ok := fields[1] == "ok"
		switch {
		case ts < from:
			if ok {
				lastOKBefore = ts
			}
		case ts <= to:
			if ok {
				oks = append(oks, ts)
			} else {
				lastFail = ts
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if lastFail == 0 {
		return 0, nil
	}
	if lastOKBefore == 0 {
		return 0, errors.New("no success before the fault: start polling earlier")
	}
	for _, ok := range oks {
		if ok > lastFail {
			return time.Duration(ok - lastOKBefore), nil
		}
	}
	return 0, errors.New("no success after the last failure: the VIP did not come back within the window")
}
