"""Full-mesh VPN over TUN (issue 9): IP parsing, addressing, routing, ICMP, membership."""
