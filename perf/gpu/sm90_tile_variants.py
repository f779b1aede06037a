#!/usr/bin/env python3
"""Tile-shape experiments of the Hopper forward (or backward) without a full build per variant.

  sm90_tile_variants.py BUILD OUT NAME=HEADER [NAME=HEADER ...]

BUILD is a CMake build configured with -DKFA_CUDA_TOOLS=ON -DCMAKE_EXPORT_COMPILE_COMMANDS=ON in which
kfa-cuda-fwd-check has been built (a Ninja build without the export: `ninja -t compdb` is used).
KFA_VARIANT_DIMS (a regex, default every head dim) picks the translation units. For each variant, the bf16 Hopper forward translation units
(forward_sm90_d*_bf16.cu) are compiled again with `-include HEADER` (a header that defines the macros of
src/sm90/forward_sm90_config.hpp, e.g. KFA_SM90_TILES_128), in parallel, and kfa-cuda-fwd-check is linked
again with those objects ahead of libkfa_cuda.a, so that the variant's instances replace the default ones.
Prints one line per variant, NAME=OUT/fwd_check_NAME, for fwd_vs_peers.py --variant.
KFA_VARIANT_KIND=bwd does the same for the Hopper backward: its translation units
(backward_sm90_d*_bf16.cu, macros of src/sm90/backward/shape.cuh) and kfa-cuda-bwd-check, giving
NAME=OUT/bwd_check_NAME.
"""
import json, os, re, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor


KIND = os.environ.get("KFA_VARIANT_KIND", "fwd")
FAMILY, TARGET = {"fwd": ("forward_sm90", "kfa-cuda-fwd-check"), "bwd": ("backward_sm90", "kfa-cuda-bwd-check")}[KIND]


def link_command(build):
    """(cwd, argv) of the check tool's link step, for Makefile and Ninja builds."""
    txt = os.path.join(build, f"backends/cuda/CMakeFiles/{TARGET}.dir/link.txt")
    if os.path.exists(txt):
        return os.path.join(build, "backends/cuda"), shlex.split(open(txt).read().splitlines()[0])
    cmds = subprocess.run(["ninja", "-C", build, "-t", "commands", TARGET], check=True,
                          capture_output=True, text=True).stdout.splitlines()
    line = cmds[-1].strip()
    line = re.sub(r"^:\s*&&\s*", "", line)
    line = re.sub(r"\s*&&\s*:\s*$", "", line)
    return build, shlex.split(line)


def main():
    build, out, specs = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    cc = os.path.join(build, "compile_commands.json")
    if os.path.exists(cc):
        db = json.load(open(cc))
    else:
        db = json.loads(subprocess.run(["ninja", "-C", build, "-t", "compdb"], check=True, capture_output=True,
                                       text=True).stdout)
    dims = os.environ.get("KFA_VARIANT_DIMS", r"\d+")  # e.g. "128" or "(64|128)"
    tus = [e for e in db if re.search(rf"{FAMILY}_d{dims}_bf16\.cu$", e["file"])]
    if not tus:
        sys.exit(f"no {FAMILY}_d*_bf16.cu in compile_commands.json")
    jobs = []
    for spec in specs:
        name, header = spec.split("=", 1)
        for e in tus:
            argv = shlex.split(e["command"]) if "command" in e else list(e["arguments"])
            for flag in ("-MT", "-MF"):  # no dependency files (they would replace the build's own)
                while flag in argv:
                    i = argv.index(flag)
                    del argv[i:i + 2]
            argv = [x for x in argv if x != "-MD"]
            o = argv.index("-o")
            obj = os.path.join(out, f"{name}_{os.path.basename(e['file'])}.o")
            argv[o + 1] = obj
            argv[1:1] = ["-include", os.path.abspath(header)]
            jobs.append((name, obj, e["directory"], argv))

    def compile_one(job):
        subprocess.run(job[3], cwd=job[2], check=True, capture_output=True, text=True)
        return job

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(compile_one, jobs))
    cwd, link = link_command(build)
    o = link.index("-o")
    for spec in specs:
        name = spec.split("=", 1)[0]
        exe = os.path.join(out, f"{KIND}_check_{name}")
        argv = list(link)
        argv[o + 1] = exe
        lib = next(i for i, a in enumerate(argv) if a.endswith("libkfa_cuda.a"))
        argv[lib:lib] = [j[1] for j in jobs if j[0] == name]
        subprocess.run(argv, cwd=cwd, check=True)
        print(f"{name}={exe}")


if __name__ == "__main__":
    main()
