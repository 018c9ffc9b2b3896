// Package testkit is what the tests of pkg/, cmd/ and test/ share: free
// loopback ports, a fake systemctl, an embedded one-member etcd, etcd data
// written without running etcd, and network namespaces for tests that need
// a LAN of their own. It lives under internal/ at the module root so that
// all three trees may import it and nothing outside the module can.
package testkit
