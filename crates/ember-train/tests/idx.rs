//! The IDX reader on hostile files: each refused with a reason, none allocates what the header
//! promises before the data is there.

use std::io::Write;
use std::path::{Path, PathBuf};

use ember_train::idx::{read_idx_images, read_idx_labels};
use ember_train::{FashionMnist, TrainError};
use flate2::Compression;
use flate2::write::GzEncoder;

fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-idx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if name.ends_with(".gz") {
        let mut encoder = GzEncoder::new(std::fs::File::create(&path).unwrap(), Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap();
    } else {
        std::fs::write(&path, bytes).unwrap();
    }
    path
}

fn images_header(count: u32, rows: u32, columns: u32) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [count, rows, columns] {
        bytes.extend(d.to_be_bytes());
    }
    bytes
}

fn error_of(path: &Path) -> String {
    read_idx_images(path).unwrap_err().to_string()
}

#[test]
fn well_formed_files_are_read_plain_and_compressed() {
    let mut bytes = images_header(2, 2, 3);
    bytes.extend(0u8..12);
    for name in ["ok-idx3", "ok-idx3.gz"] {
        let images = read_idx_images(&file(name, &bytes)).unwrap();
        assert_eq!((images.len(), images.height, images.width), (2, 2, 3));
        assert_eq!(images.image(1), &[6, 7, 8, 9, 10, 11]);
    }
    let labels = read_idx_labels(&file("labels.gz", &[0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).unwrap();
    assert_eq!(labels, [7, 8, 9]);
}

#[test]
fn malformed_files_are_refused_with_a_reason() {
    let mut short = images_header(2, 28, 28);
    short.extend([0u8; 100]);
    let mut long = images_header(1, 1, 1);
    long.extend([1u8, 2]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "no IDX header"),
        ("text", b"hello world".to_vec(), "not an IDX file"),
        ("floats", [0, 0, 0x0d, 3].to_vec(), "only unsigned bytes"),
        (
            "rank",
            [0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1].to_vec(),
            "2 dimensions where 3",
        ),
        ("cut-header", [0, 0, 8, 3, 0, 0].to_vec(), "header ends early"),
        ("short.gz", short, "promises 1568 values, the file holds 100"),
        ("long", long, "more values than the header's 1"),
        // 4 G × 4 G × 4 G bytes: refused from the header alone.
        ("huge", images_header(u32::MAX, u32::MAX, u32::MAX), "16 EiB"),
    ];
    for (name, bytes, expected) in cases {
        let message = error_of(&file(name, &bytes));
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[test]
fn a_missing_data_set_says_how_to_install_it() {
    let error = FashionMnist::load("/nonexistent/fashion").unwrap_err();
    assert!(matches!(error, TrainError::MissingDataset { .. }), "{error:?}");
    assert!(error.to_string().contains("dataset-fashion-mnist"), "{error}");
}
