# iptables-rootfs.sh, sourced by artifacts.sh (the kube-proxy image) and network.sh (flannel's and kube-router's):
# iptables_rootfs ROOT [PROGRAM...] puts this machine's iptables (nft, and legacy when installed), conntrack when
# installed, and every library they, their xtables modules and the extra PROGRAMs load, into ROOT, a usr-merged
# root filesystem (lib, lib64 and sbin link into usr), with the iptables*, ip6tables* command links and the /etc
# files they read. PROGRAMs themselves are not copied, nor libraries under IPTABLES_ROOTFS_SKIP (a directory the
# caller fills itself). Returns 1, saying why, when iptables is not installed.
iptables_rootfs() {
	local root=$1 f r libs bins=()
	shift
	[[ -x /usr/sbin/xtables-nft-multi ]] || { echo "iptables (xtables-nft-multi) is not installed on this machine" >&2; return 1; }
	mkdir -p "$root/usr/sbin" "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib64" "$root/etc" "$root/run" "$root/var/run"
	ln -sfn usr/lib "$root/lib"
	ln -sfn usr/lib64 "$root/lib64"
	ln -sfn usr/sbin "$root/sbin"
	for f in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/conntrack; do
		[[ -x $f ]] && bins+=("$f")
	done
	libs=$(ldd "${bins[@]}" "$@" /usr/lib/x86_64-linux-gnu/xtables/*.so 2>/dev/null |
		awk '/=>/ {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u)
	for f in "${bins[@]}" $libs; do
		[[ -n ${IPTABLES_ROOTFS_SKIP:-} && $f == "$IPTABLES_ROOTFS_SKIP"/* ]] && continue
		r=$(readlink -f "$f")
		mkdir -p "$root$(dirname "$r")"
		cp -n "$r" "$root$r"
		[[ "$(basename "$f")" == "$(basename "$r")" ]] || ln -sf "$(basename "$r")" "$root$(dirname "$r")/$(basename "$f")"
	done
	ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/usr/lib64/ld-linux-x86-64.so.2"
	cp -a /usr/lib/x86_64-linux-gnu/xtables "$root/usr/lib/x86_64-linux-gnu/"
	for f in /etc/protocols /etc/ethertypes /etc/services /etc/ld.so.cache; do [[ -f $f ]] && cp "$f" "$root/etc/"; done
	for f in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
		iptables-nft iptables-nft-save iptables-nft-restore ip6tables-nft ip6tables-nft-save ip6tables-nft-restore; do
		ln -sf xtables-nft-multi "$root/usr/sbin/$f"
	done
	if [[ -x /usr/sbin/xtables-legacy-multi ]]; then
		for f in iptables-legacy iptables-legacy-save iptables-legacy-restore ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore; do
			ln -sf xtables-legacy-multi "$root/usr/sbin/$f"
		done
	fi
}
