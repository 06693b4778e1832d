#!/usr/bin/env python3
"""Helpers for scripts/bench (its setup and its table; never part of the product).

  bench-helper.py base ROOTFS LAYOUT       writes ROOTFS as a one-layer OCI image layout tagged `base`
                                           (sorted entries, owner 0, fixed mtimes, gzip mtime 0: the same
                                           bytes on every run); prints the manifest digest
  bench-helper.py extend LAYOUT OUT GZ...  writes OUT: LAYOUT's image (tagged `base`) with the gzip layer
                                           blobs GZ... added on top (moved into OUT); prints its manifest digest
  bench-helper.py layers LAYOUT            prints the total size in bytes of the layers of the layout's image
  bench-helper.py blobs LAYOUT [layers]    prints the digests of its image's config and layers (or the layers)
  bench-helper.py table RESULTS LOAD OUT   renders the key=value results as the markdown table, to stdout
                                           and to OUT
"""
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import zlib

EPOCH = 1_600_000_000


def put_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(rootfs):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for directory, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs + files):
                paths.append(os.path.join(directory, name))
        for path in sorted(paths, key=lambda p: os.path.relpath(p, rootfs)):
            info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = EPOCH
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def write_base(rootfs, layout):
    tar = layer_tar(rootfs)
    blob = gzip.compress(tar, compresslevel=6, mtime=0)
    layer_digest = put_blob(layout, blob)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    created = "2020-09-13T12:26:40Z"
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": created, "created_by": "scripts/bench: busybox-static base"}],
    }
    config_bytes = canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put_blob(layout, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": len(blob),
            }
        ],
    }
    manifest_bytes = canonical(manifest)
    manifest_digest = put_blob(layout, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": "base"},
                "platform": {"architecture": arch, "os": "linux"},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical(index))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    print(manifest_digest)


def write_json_blob(layout, value):
    data = canonical(value)
    return put_blob(layout, data), len(data)


def hash_gzip_layer(path):
    """The sha256 of the gzip file and of what it decompresses to (its diff_id), streaming."""
    blob, tar = hashlib.sha256(), hashlib.sha256()
    inflate = zlib.decompressobj(wbits=31)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            blob.update(chunk)
            tar.update(inflate.decompress(chunk))
    tar.update(inflate.flush())
    return "sha256:" + blob.hexdigest(), "sha256:" + tar.hexdigest()


def extend(layout, out, gz_paths):
    shutil.copytree(layout, out)
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    entry = index["manifests"][0]
    manifest = read_blob(out, entry["digest"])
    config = read_blob(out, manifest["config"]["digest"])
    for n, path in enumerate(gz_paths, start=1):
        digest, diff_id = hash_gzip_layer(path)
        size = os.path.getsize(path)
        os.rename(path, os.path.join(out, "blobs", "sha256", digest.split(":", 1)[1]))
        manifest["layers"].append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}
        )
        config["rootfs"]["diff_ids"].append(diff_id)
        config["history"].append({"created": config["created"], "created_by": f"scripts/bench: registry layer {n}"})
    manifest["config"]["digest"], manifest["config"]["size"] = write_json_blob(out, config)
    entry["digest"], entry["size"] = write_json_blob(out, manifest)
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(canonical(index))
    print(entry["digest"])


def image_manifest(layout):
    with open(os.path.join(layout, "index.json")) as f:
        descriptor = json.load(f)["manifests"][0]
    node = read_blob(layout, descriptor["digest"])
    while "manifests" in node:  # an index (Hermetic's single-platform output is a manifest, but be general)
        node = read_blob(layout, node["manifests"][0]["digest"])
    return node


def blobs(layout, layers_only):
    manifest = image_manifest(layout)
    for layer in ([] if layers_only else [manifest["config"]]) + manifest["layers"]:
        print(layer["digest"])


def read_blob(layout, digest):
    with open(os.path.join(layout, "blobs", *digest.split(":", 1)), "rb") as f:
        return json.load(f)


def layer_bytes(layout):
    print(sum(layer["size"] for layer in image_manifest(layout)["layers"]))


def registry_table(r, s, ratio, mib, rate):
    """The registry case's two tables: each measure's wall time, its throughput in blob bytes, and
    Hermetic's time over it."""

    def row(label, key, hermetic):
        return f"| {label} | {s(key)} | {rate('reg_bytes', key)} | {ratio(hermetic, key) if key != hermetic else ''} |"

    if "reg_h_push" in r and "reg_h_warm" in r:
        r["reg_h_push_only"] = str(max(1, int(r["reg_h_push"]) - int(r["reg_h_warm"])))

    def push_row(label, key, compared=False):
        ratios = f"{ratio('reg_h_push', key)} | {ratio('reg_h_push_only', key)}" if compared else " | "
        throughput = rate("reg_bytes", key) if key != "reg_h_warm" else ""
        return f"| {label} | {s(key)} | {throughput} | {ratios} |"

    return [
        f"### Registries: a base of {mib('reg_bytes')} in 6 gzip layers (busybox, 200 MiB, 4 × 50 MiB of"
        " the seeded generator's bytes) on Debian's `docker-registry`, loopback",
        "",
        "| pull | wall | throughput (blob bytes) | Hermetic / this |",
        "|---|---|---|---|",
        row("Hermetic: cold build of `FROM REG/bench/base@sha256:…` + `RUN true`, empty `--state-dir`, no output"
            " (pull, verify, unpack, run)", "reg_h_pull", "reg_h_pull"),
        row("`buildah pull` into an empty store (pull, unpack)", "reg_b_pull", "reg_h_pull"),
        row("`buildah build` of the same Dockerfile into an empty store", "reg_b_build", "reg_h_pull"),
        row("raw: `skopeo copy docker://… oci:DIR` (download, verify, write)", "reg_skopeo_pull", "reg_h_pull"),
        row("raw: `curl` of every blob at once to /dev/null", "reg_curl_pull", "reg_h_pull"),
        row("raw: `curl \\| pigz -dc \\| tar -xf -` of every layer at once, each into a directory of its own",
            "reg_curl_untar", "reg_h_pull"),
        "",
        "| push (each pusher to a registry of its own, started empty: every blob is sent) | wall |"
        " throughput (blob bytes) | Hermetic (whole command) / this | Hermetic's push alone / this |",
        "|---|---|---|---|---|",
        push_row("Hermetic: warm build, no output (what the push adds to)", "reg_h_warm"),
        push_row("Hermetic: warm build with `-o type=image,name=REG/bench/pushed:bench,push=true`", "reg_h_push"),
        push_row("Hermetic: the push alone (the two above subtracted)", "reg_h_push_only"),
        push_row("`buildah push` of the same image from its store (compresses its layers again, gzip)",
                 "reg_b_push", True),
        push_row("raw: `skopeo copy oci:DIR docker://…` of the pulled base (same blobs)", "reg_skopeo_push", True),
        push_row("raw: `curl` upload of every blob at once (`POST`, then `PUT` of its `Location`)",
                 "reg_curl_push", True),
    ]


def table(results_path, load, out_path):
    r = {}
    with open(results_path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                r[key] = value

    def s(key):  # milliseconds -> seconds text
        return f"{int(r[key]) / 1000:.2f} s" if key in r else "n/a"

    def ratio(a, b):
        if a not in r or b not in r or int(r[b]) <= 0:
            return "n/a"
        return f"{int(r[a]) / int(r[b]):.2f}×"

    def mib(key):
        return f"{int(r[key]) / 1048576:.1f} MiB" if key in r else "n/a"

    def rate(bytes_key, ms_key):
        if bytes_key not in r or ms_key not in r or int(r[ms_key]) <= 0:
            return "n/a"
        return f"{int(r[bytes_key]) / 1e6 / (int(r[ms_key]) / 1000):.0f} MB/s"

    lines = [
        f"Measured by `scripts/bench{r.get('flags', '')}` at {r.get('when', '?')} on {r.get('machine', '?')};",
        f"Hermetic {r.get('commit', '?')}, {r.get('buildah', 'buildah ?')}. Builds: best of {r['runs']} runs;"
        f" floor and layer writing: best of {r['cheap_runs']}. Load average during the run: {load}.",
        "",
    ]
    if "h_gzip_cold" in r or "h_zstd_cold" in r:
        for comp in ("gzip", "zstd"):
            lines += [
                f"### The case from issue 10, layers as {comp}",
                "",
                "| measure | Hermetic | Buildah build | Buildah build + push | Hermetic / Buildah build |"
                " Hermetic / Buildah build + push |",
                "|---|---|---|---|---|---|",
                f"| the RUN script in a bare chroot (the floor) | {s('floor')} | {s('floor')} | {s('floor')} | | |",
            ]
            for measure, label in (
                ("cold", "cold build"),
                ("nochange", "rebuild, nothing changed"),
                ("changed", "rebuild after `app.txt` changed"),
            ):
                h, b, bp = f"h_{comp}_{measure}", f"b_{comp}_{measure}", f"bp_{comp}_{measure}"
                lines.append(f"| {label} | {s(h)} | {s(b)} | {s(bp)} | {ratio(h, b)} | {ratio(h, bp)} |")
                if measure == "cold":
                    for key in (h, b, bp):
                        if key in r and "floor" in r:
                            r[key + "_over"] = str(int(r[key]) - int(r["floor"]))
                    h, b, bp = h + "_over", b + "_over", bp + "_over"
                    lines.append(
                        f"| builder overhead, cold (wall − floor) | {s(h)} | {s(b)} | {s(bp)} |"
                        f" {ratio(h, b)} | {ratio(h, bp)} |"
                    )
            lines.append(
                f"| size of the image's layers | {mib(f'h_{comp}_size')} | | {mib(f'bp_{comp}_size')} | |"
                f" {ratio(f'h_{comp}_size', f'bp_{comp}_size')} |"
            )
            lines.append("")
    if "tar_plain" in r or "hl_gzip" in r:
        lines += [
            f"### Layer writing alone: a tree of {mib('tree_tar')} as a tar (the case's 20,000 files and 200 MiB)",
            "",
            "| writer | wall | throughput (tar bytes) | output | against |",
            "|---|---|---|---|---|",
            f"| `tar -cf - tree > file` (no compression) | {s('tar_plain')} | {rate('tree_tar', 'tar_plain')} |"
            f" {mib('tree_tar')} | |",
        ]
        for comp, tool in (("gzip", "pigz -6"), ("zstd", "zstd -3 -T2")):
            lines += [
                f"| `tar -cf - tree \\| {tool} > file` | {s(f'tar_{comp}')} | {rate('tree_tar', f'tar_{comp}')} |"
                f" {mib(f'tar_{comp}_size')} | |",
                f"| Hermetic `FROM scratch` + `COPY tree`, `--compression {comp}` (whole build) |"
                f" {s(f'hl_{comp}')} | {rate('tree_tar', f'hl_{comp}')} | {mib(f'hl_{comp}_size')} |"
                f" throughput {ratio(f'tar_{comp}', f'hl_{comp}')} of `{tool}`'s,"
                f" size {ratio(f'hl_{comp}_size', f'tar_{comp}_size')} |",
            ]
        lines.append(
            f"| Hermetic, same build, `--compression uncompressed` | {s('hl_uncompressed')} |"
            f" {rate('tree_tar', 'hl_uncompressed')} | {mib('hl_uncompressed_size')} | |"
        )
        for comp, tool in (("gzip", "pigz -6"), ("zstd", "zstd -3 -T2")):
            for key, a, b in (
                (f"hl_{comp}_added", f"hl_{comp}", "hl_uncompressed"),
                (f"tar_{comp}_added", f"tar_{comp}", "tar_plain"),
            ):
                if a in r and b in r:
                    r[key] = str(max(1, int(r[a]) - int(r[b])))
            lines.append(
                f"| {comp} alone: time added to the uncompressed run, Hermetic vs `{tool}` |"
                f" {s(f'hl_{comp}_added')} vs {s(f'tar_{comp}_added')} |"
                f" {rate('tree_tar', f'hl_{comp}_added')} vs {rate('tree_tar', f'tar_{comp}_added')} | |"
                f" throughput ratio {ratio(f'tar_{comp}_added', f'hl_{comp}_added')} |"
            )
    if "reg_h_pull" in r:
        if lines[-1]:
            lines.append("")
        lines += registry_table(r, s, ratio, mib, rate)
    if "big_rss_kb" in r:
        lines += [
            "",
            f"Peak RSS of Hermetic writing a {mib('big_bytes')} layer (`COPY` of one file, gzip; GNU time `%M`):"
            f" {int(r['big_rss_kb']) / 1024:.0f} MiB (build {s('big_ms')}).",
        ]
    text = "\n".join(lines) + "\n"
    with open(out_path, "w") as f:
        f.write(text)
    sys.stdout.write(text)


def main(argv):
    if len(argv) == 4 and argv[1] == "base":
        write_base(argv[2], argv[3])
    elif len(argv) >= 5 and argv[1] == "extend":
        extend(argv[2], argv[3], argv[4:])
    elif len(argv) == 3 and argv[1] == "layers":
        layer_bytes(argv[2])
    elif len(argv) in (3, 4) and argv[1] == "blobs" and argv[3:] in ([], ["layers"]):
        blobs(argv[2], len(argv) == 4)
    elif len(argv) == 5 and argv[1] == "table":
        table(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
