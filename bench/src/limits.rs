//! The machine's physical limits, measured in the same run: SHA-256 on one core, loopback
//! TCP, and disk writes made durable with fdatasync.

use std::io::Write;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::Error;
use crate::content::Rng;

pub(crate) async fn measure(
    dir: &std::path::Path,
    size: u64,
) -> Result<Vec<(String, Value)>, Error> {
    let block = Rng::new(5).bytes(16 << 20);
    let rounds = size.div_ceil(block.len() as u64);
    let bytes = rounds * block.len() as u64;
    let mb = |seconds: f64| bytes as f64 / 1e6 / seconds;

    let started = Instant::now();
    let mut hash = Sha256::new();
    for _ in 0..rounds {
        hash.update(&block);
    }
    let _ = hash.finalize();
    let sha = mb(started.elapsed().as_secs_f64());

    // One stream between two threads of their own (blocking sockets), in 1 MiB writes and
    // reads, as the ceiling's pull moves its bytes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; crate::content::FRAME];
        let mut total = 0u64;
        loop {
            let n = std::io::Read::read(&mut stream, &mut buffer)?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(total);
            }
            total += n as u64;
        }
    });
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr)?;
    for _ in 0..rounds {
        for frame in block.chunks(crate::content::FRAME) {
            stream.write_all(frame)?;
        }
    }
    drop(stream);
    sink.join().map_err(|_| "the loopback sink panicked")??;
    let tcp = mb(started.elapsed().as_secs_f64());

    // Written twice: in one go with one fdatasync at the end, and as berth's FsStorage writes
    // an upload: in parts of its default size, each allocated before it is written and handed
    // to the disk (its writeback started) once written, and one fdatasync at the end.
    let path = dir.join("berth-bench-disk.tmp");
    let mut disk = Vec::new();
    for piece in [block.len(), berth::DEFAULT_PART_SIZE] {
        let as_berth = piece < block.len();
        crate::process::settle_memory(bytes);
        let started = Instant::now();
        {
            let mut file = std::fs::File::create(&path)?;
            let mut offset = 0u64;
            for _ in 0..rounds {
                for part in block.chunks(piece) {
                    let len = part.len() as u64;
                    if as_berth {
                        berth::testing::preallocate(&file, offset, len);
                    }
                    file.write_all(part)?;
                    if as_berth {
                        berth::testing::start_writeback(&file, offset, len);
                    }
                    offset += len;
                }
            }
            file.sync_data()?;
        }
        disk.push(mb(started.elapsed().as_secs_f64()));
        std::fs::remove_file(&path)?;
    }

    Ok(vec![
        ("limit-sha256".into(), json!({"value": sha, "unit": "MB/s"})),
        (
            "limit-loopback-tcp".into(),
            json!({"value": tcp, "unit": "MB/s"}),
        ),
        (
            "limit-disk-fdatasync".into(),
            json!({"value": disk[0], "unit": "MB/s"}),
        ),
        (
            "limit-disk-fdatasync-parts".into(),
            json!({"value": disk[1], "unit": "MB/s", "part_bytes": berth::DEFAULT_PART_SIZE}),
        ),
    ])
}
