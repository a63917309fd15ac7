//! Throwaway: memory-bound WGSL kernel shapes on the card (not committed).
use std::time::Instant;

const HDR: &str = "const WG: u32 = 256u;\n";

fn kernels(n: u32) -> Vec<(&'static str, String, Vec<usize>, u32, f64)> {
    let n4 = n / 4;
    let mut v = Vec::new();
    let s4 = format!("{HDR}const N: u32 = {n}u;
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let stride = nwg.x * WG * 4u;
  for (var f = wid.x * WG * 4u + lid; f < N; f += stride) {{
    let x0 = a[f]; let x1 = a[f + 256u]; let x2 = a[f + 512u]; let x3 = a[f + 768u];
    b[f] = 2.0 * x0; b[f + 256u] = 2.0 * x1; b[f + 512u] = 2.0 * x2; b[f + 768u] = 2.0 * x3;
  }}
}}");
    v.push((
        "copy_s4",
        s4,
        vec![0, 1],
        (n / 1024).min(65535),
        8.0 * n as f64,
    ));
    for (name, groups) in [("copy_v4", (n4 / 256).min(65535)), ("copy_v4_8k", 8448u32)] {
        let k = format!("{HDR}const N4: u32 = {n4}u;
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<f32>>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  for (var q = wid.x * WG + lid; q < N4; q += nwg.x * WG) {{ b[q] = 2.0 * a[q]; }}
}}");
        v.push((name, k, vec![0, 1], groups, 8.0 * n as f64));
    }
    let k = format!("{HDR}const N4: u32 = {n4}u;
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<f32>>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let stride = nwg.x * WG * 2u;
  for (var q = wid.x * WG * 2u + lid; q < N4; q += stride) {{ let x0 = a[q]; let x1 = a[q + 256u]; b[q] = 2.0 * x0; b[q + 256u] = 2.0 * x1; }}
}}");
    v.push((
        "copy_v4x2",
        k,
        vec![0, 1],
        (n4 / 512).min(65535),
        8.0 * n as f64,
    ));
    // Pure reads: each thread folds a grid-stride sweep, writes one partial.
    for (name, vec) in [("read_s", false), ("read_v4", true)] {
        let (ty, len, fold) = if vec {
            ("vec4<f32>", n4, "acc = acc + a[i];")
        } else {
            ("f32", n, "acc = acc + vec4<f32>(a[i]);")
        };
        let k = format!("{HDR}const LEN: u32 = {len}u;
@group(0) @binding(0) var<storage, read> a: array<{ty}>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  var acc = vec4<f32>(0.0);
  let g = wid.x * WG + lid;
  for (var i = g; i < LEN; i += nwg.x * WG) {{ {fold} }}
  b[g] = acc.x + acc.y + acc.z + acc.w;
}}");
        v.push((name, k, vec![0, 1], 8448, 4.0 * n as f64));
    }
    // Rosenbrock step, vec4 with scalar neighbours (two views of w).
    let k = format!("{HDR}const N: u32 = {n}u; const N4: u32 = {n4}u;
@group(0) @binding(0) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> o4: array<vec4<f32>>;
fn g(prev: f32, x: f32, next: f32, i: u32) -> f32 {{
  var d = 0.0;
  if (i >= 1u) {{ d = 200.0 * (x - prev * prev); }}
  if (i < N - 1u) {{ d = d - 2.0 * (1.0 - x) - 400.0 * (next - x * x) * x; }}
  return x - 0.0001 * d;
}}
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  for (var q = wid.x * WG + lid; q < N4; q += nwg.x * WG) {{
    let x = w4[q];
    let i = 4u * q;
    let prev = w[max(i, 1u) - 1u];
    let next = w[min(i + 4u, N - 1u)];
    o4[q] = vec4<f32>(g(prev, x.x, x.y, i), g(x.x, x.y, x.z, i + 1u), g(x.y, x.z, x.w, i + 2u), g(x.z, x.w, next, i + 3u));
  }}
}}");
    v.push((
        "rosen_v4",
        k,
        vec![0, 0, 1],
        (n4 / 256).min(65535),
        8.0 * n as f64,
    ));
    let k = format!("{HDR}const N: u32 = {n}u;
@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
fn g(prev: f32, x: f32, next: f32, i: u32) -> f32 {{
  var d = 0.0;
  if (i >= 1u) {{ d = 200.0 * (x - prev * prev); }}
  if (i < N - 1u) {{ d = d - 2.0 * (1.0 - x) - 400.0 * (next - x * x) * x; }}
  return x - 0.0001 * d;
}}
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let stride = nwg.x * WG * 4u;
  for (var f = wid.x * WG * 4u + lid; f < N; f += stride) {{
    for (var u = 0u; u < 4u; u++) {{
      let i = f + u * 256u;
      o[i] = g(w[max(i, 1u) - 1u], w[i], w[min(i + 1u, N - 1u)], i);
    }}
  }}
}}");
    v.push((
        "rosen_s4",
        k,
        vec![0, 1],
        (n / 1024).min(65535),
        8.0 * n as f64,
    ));
    // Seed: f = sum (x+y)*max(y,z) and the three gradients.
    for (name, vec) in [("seed_s", false), ("seed_v4", true)] {
        let (ty, len) = if vec { ("vec4<f32>", n4) } else { ("f32", n) };
        let k = format!("{HDR}const LEN: u32 = {len}u;
@group(0) @binding(0) var<storage, read> x: array<{ty}>;
@group(0) @binding(1) var<storage, read> y: array<{ty}>;
@group(0) @binding(2) var<storage, read> z: array<{ty}>;
@group(0) @binding(3) var<storage, read_write> dx: array<{ty}>;
@group(0) @binding(4) var<storage, read_write> dy: array<{ty}>;
@group(0) @binding(5) var<storage, read_write> dz: array<{ty}>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  var acc = {ty}(0.0);
  let g = wid.x * WG + lid;
  for (var i = g; i < LEN; i += nwg.x * WG) {{
    let a = x[i]; let b = y[i]; let c = z[i];
    let q = a + b; let m = max(b, c);
    let hit = select({ty}(0.0), {ty}(1.0), b >= c);
    acc = acc + q * m;
    dx[i] = m; dy[i] = m + q * hit; dz[i] = q * (1.0 - hit);
  }}
  part[g] = dot(vec4<f32>(1.0), vec4<f32>(acc));
}}");
        v.push((name, k, vec![0, 1, 2, 3, 4, 5, 6], 1024, 24.0 * n as f64));
    }
    v
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1 << 20);
    let only = std::env::args().nth(2);
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .unwrap();
    eprintln!("adapter {}", adapter.get_info().name);
    let bufs: Vec<wgpu::Buffer> = (0..7)
        .map(|k| {
            let b = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 4 * n as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let data: Vec<f32> = (0..n)
                .map(|i| ((i as u64 * 2654435761 + k) % 1000) as f32 * 0.002 - 1.0)
                .collect();
            queue.write_buffer(&b, 0, bytemuck::cast_slice(&data));
            b
        })
        .collect();
    let wait = || {
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    };
    wait();
    for (name, wgsl, binds, groups, bytes) in kernels(n) {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<_> = binds
            .iter()
            .enumerate()
            .map(|(s, &b)| wgpu::BindGroupEntry {
                binding: s as u32,
                resource: bufs[if b == 0 { 0 } else { b }].as_entire_binding(),
            })
            .collect();
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let batch = 10;
        let run = || {
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bg, &[]);
                for _ in 0..batch {
                    pass.dispatch_workgroups(groups, 1, 1);
                }
            }
            queue.submit([enc.finish()]);
            wait();
        };
        let t = Instant::now();
        while t.elapsed().as_secs_f64() < 0.7 {
            run();
        }
        let mut times: Vec<f64> = (0..15)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64() * 1e3 / batch as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        println!(
            "{name:12} n=2^{} groups={groups:6} {ms:8.4} ms  {:7.0} GB/s",
            n.trailing_zeros(),
            bytes / ms / 1e6
        );
    }
}
