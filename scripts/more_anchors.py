"""The bench's `mlp` and `layernorm` workloads in JAX and PyTorch, with
anchors.py's protocol (data on the device, two warm-up runs, the median of
20 runs, each finished before the clock stops). Run it in the same call as
`bench --workload mlp,layernorm`. Both read a batch X of n / 1024 rows of
1024 features (n = 2^k elements, --sizes):
  mlp        one SGD step (lr 0.1) of a network 1024-128 (relu)-10 (softmax
             cross-entropy) over one-hot targets
  layernorm  one SGD step (lr 1e-4) of a layer norm's scale g under a tanh:
             L = sum tanh(g * (x - mean) / sqrt(var + 1e-5)), row by row

    python3 scripts/more_anchors.py [--sizes 18,20,22] [--systems jax,torch,torch.compile]

One JSON object per line, as anchors.py prints them.
"""
import argparse, json, time

p = argparse.ArgumentParser()
p.add_argument("--sizes", default="18,20,22", help="log2 of X's elements")
p.add_argument("--systems", default="jax,torch,torch.compile")
p.add_argument("--reps", type=int, default=20)
args = p.parse_args()
sizes = [int(s) for s in args.sizes.split(",")]
D, H, O = 1024, 128, 10


def median(ts):
    ts = sorted(ts)
    return ts[len(ts) // 2]


def emit(workload, system, logn, ms, device):
    print(json.dumps({"workload": workload, "system": system, "log2_n": logn, "ms_median": round(ms, 4), "device": device}), flush=True)


systems = args.systems.split(",")
if "jax" in systems:
    try:
        import jax, jax.numpy as jnp

        def timed(step, state, *data):
            for _ in range(2):
                state = step(state, *data)
            jax.block_until_ready(state)
            ts = []
            for _ in range(args.reps):
                s = time.perf_counter()
                state = step(state, *data)
                jax.block_until_ready(state)
                ts.append((time.perf_counter() - s) * 1e3)
            return median(ts)

        def mlp_loss(p, x, t):
            h = jax.nn.relu(x @ p[0] + p[1])
            return -(t * jax.nn.log_softmax(h @ p[2] + p[3])).sum() / x.shape[0]

        def ln_loss(g, x):
            c = x - x.mean(-1, keepdims=True)
            return jnp.tanh(g * c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + 1e-5)).sum()

        mlp_step = jax.jit(lambda p, x, t: [w - 0.1 * d for w, d in zip(p, jax.grad(mlp_loss)(p, x, t))])
        ln_step = jax.jit(lambda g, x: g - 1e-4 * jax.grad(ln_loss)(g, x))
        device = str(jax.devices()[0].device_kind)
        for logn in sizes:
            b = (1 << logn) // D
            k = jax.random.PRNGKey(0)
            x = jax.random.normal(jax.random.fold_in(k, 1), (b, D), jnp.float32)
            t = jax.nn.one_hot(jnp.arange(b) % O, O, dtype=jnp.float32)
            params = [0.05 * jax.random.normal(jax.random.fold_in(k, 2), (D, H), jnp.float32), jnp.zeros(H),
                      0.05 * jax.random.normal(jax.random.fold_in(k, 3), (H, O), jnp.float32), jnp.zeros(O)]
            emit("mlp", "jax.jit", logn, timed(mlp_step, params, x, t), device)
            emit("layernorm", "jax.jit", logn, timed(ln_step, jnp.ones(D), x), device)
    except ImportError as e:
        print(json.dumps({"system": "jax.jit", "skipped": str(e)}))

torch_systems = [s for s in systems if s.startswith("torch")]
if torch_systems:
    try:
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"

        def sync():
            if dev == "cuda":
                torch.cuda.synchronize()

        def timed(step):
            step(); step(); sync()
            ts = []
            for _ in range(args.reps):
                s = time.perf_counter()
                step(); sync()
                ts.append((time.perf_counter() - s) * 1e3)
            return median(ts)

        def mlp_loss(p, x, t):
            h = torch.relu(x @ p[0] + p[1])
            return -(t * torch.log_softmax(h @ p[2] + p[3], -1)).sum() / x.shape[0]

        def ln_loss(g, x):
            c = x - x.mean(-1, keepdim=True)
            return torch.tanh(g * c * torch.rsqrt((c * c).mean(-1, keepdim=True) + 1e-5)).sum()

        for system in torch_systems:
            fm, fl = (torch.compile(mlp_loss), torch.compile(ln_loss)) if system == "torch.compile" else (mlp_loss, ln_loss)
            for logn in sizes:
                b = (1 << logn) // D
                torch.manual_seed(0)
                x = torch.randn(b, D, device=dev)
                t = torch.nn.functional.one_hot(torch.arange(b, device=dev) % O, O).float()
                params = [(0.05 * torch.randn(D, H, device=dev)).requires_grad_(), torch.zeros(H, device=dev, requires_grad=True),
                          (0.05 * torch.randn(H, O, device=dev)).requires_grad_(), torch.zeros(O, device=dev, requires_grad=True)]
                g = torch.ones(D, device=dev, requires_grad=True)

                def sgd(ws, lr):
                    with torch.no_grad():
                        for w in ws:
                            w.sub_(lr * w.grad)
                            w.grad = None

                def mlp_step():
                    fm(params, x, t).backward()
                    sgd(params, 0.1)

                def ln_step():
                    fl(g, x).backward()
                    sgd([g], 1e-4)

                emit("mlp", system, logn, timed(mlp_step), name)
                emit("layernorm", system, logn, timed(ln_step), name)
    except ImportError as e:
        print(json.dumps({"system": "torch", "skipped": str(e)}))
