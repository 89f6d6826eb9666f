import sys, subprocess, tempfile
sys.path[:0] = ["scripts"]
from check_kernel_compile import compile_one, KERNELS
PTXAS = "/tmp/tr36/site/triton/backends/nvidia/bin/ptxas"
for tuner, consts, ptrs, ints, units in KERNELS:
    for dt in ("bf16", "fp32"):
        for cfg in tuner.configs[:4]:
            try:
                k = compile_one(tuner, consts, ptrs, ints, units, cfg, dt)
            except Exception as e:
                print(tuner.fn.__name__, dt, "compile fail", str(e)[:80]); continue
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(k.asm["ptx"])
            err = subprocess.run([PTXAS, "-v", "-arch=sm_90a", f.name, "-o", "/dev/null"], capture_output=True, text=True).stderr
            regs = [l.split("Used")[1].split(",")[0].strip() for l in err.splitlines() if "Used" in l]
            spill = [l.split(",")[1].strip() for l in err.splitlines() if "spill stores" in l]
            wg = "wgmma" in k.asm["ptx"]
            print(f"{tuner.fn.__name__:28s} {dt} w{cfg.num_warps} s{cfg.num_stages} {cfg.kwargs} wgmma={wg} C7515={'C7515' in err} regs={regs} {spill}", flush=True)
