//! `ember run`: a plain forward pass of any ONNX graph on tensors from `.npy` files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ember_core::{DeviceError, describe_dims, open_device};
use ember_runtime::{HostTensor, OnnxGraph};
use ember_vision::{NpyValues, ReadPaths, Written, check_outputs, read_npy_values, write_npy, write_npy_i64};

use crate::Failure;
use crate::cli::RunArgs;

pub fn run(args: &RunArgs) -> Result<(), Failure> {
    // Usage errors first: nothing is loaded for a command that cannot run.
    let given: Vec<(Option<&str>, PathBuf)> = args
        .inputs
        .iter()
        .map(|text| match text.split_once('=') {
            Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok((Some(name), PathBuf::from(file))),
            Some(_) => Err(Failure::usage(format!("--input `{text}` is not NAME=FILE.npy"))),
            None => Ok((None, PathBuf::from(text))),
        })
        .collect::<Result<_, _>>()?;
    let opened = open_device(&args.device).map_err(|e| match e {
        DeviceError::Unavailable { .. } => Failure::Input(e.to_string()),
        _ => Failure::usage(e.to_string()),
    })?;
    let device = opened.device;
    let graph = OnnxGraph::load(&args.model, &device)?;
    let declared = graph.inputs();
    let mut files: Vec<Option<&Path>> = vec![None; declared.len()];
    for (name, file) in &given {
        let index = match name {
            Some(name) => declared.iter().position(|d| d.name == *name).ok_or_else(|| {
                Failure::usage(format!(
                    "the graph has no input `{name}`; its inputs: {}",
                    input_list(&graph)
                ))
            })?,
            None if declared.len() == 1 => 0,
            None => {
                return Err(Failure::usage(format!(
                    "--input {} names no input; the graph has {} (give NAME=FILE.npy): {}",
                    file.display(),
                    declared.len(),
                    input_list(&graph)
                )));
            }
        };
        if files[index].replace(file.as_path()).is_some() {
            return Err(Failure::usage(format!(
                "input `{}` is given twice",
                declared[index].name
            )));
        }
    }
    if let Some(missing) = files.iter().position(Option::is_none) {
        return Err(Failure::usage(format!(
            "no --input for `{}`; the graph's inputs: {}",
            declared[missing].name,
            input_list(&graph)
        )));
    }
    let files: Vec<&Path> = files.into_iter().flatten().collect();

    let mut read = ReadPaths::default();
    read.files.push(("model", args.model.clone()));
    read.files.extend(files.iter().map(|f| ("tensor", f.to_path_buf())));
    let outputs: Vec<PathBuf> = match &args.save_outputs {
        Some(folder) => output_files(&graph, folder),
        None => Vec::new(),
    };
    let written: Vec<Written> = outputs.iter().map(|p| Written::new("--save-outputs", p)).collect();
    check_outputs(&read, &written, &[]).map_err(|e| Failure::usage(e.to_string()))?;

    let mut tensors = Vec::with_capacity(files.len());
    for file in &files {
        let (values, shape) = read_npy_values(file)?;
        tensors.push(match values {
            NpyValues::Float(values) => HostTensor::Float { values, shape },
            NpyValues::Int(values) => HostTensor::Int { values, shape },
        });
    }
    let results = graph.run(tensors, &device)?;
    if let Some(folder) = &args.save_outputs {
        std::fs::create_dir_all(folder)
            .map_err(|e| Failure::Input(format!("cannot create {}: {e}", folder.display())))?;
    }
    for (index, (declared, result)) in graph.outputs().iter().zip(&results).enumerate() {
        let shape: Vec<u64> = result.shape().iter().map(|&d| d as u64).collect();
        let dims = describe_dims(&result.shape().iter().map(|&d| Some(d)).collect::<Vec<_>>());
        let kind = match result {
            HostTensor::Float { .. } => "float32",
            HostTensor::Int { .. } => "int64",
        };
        match outputs.get(index) {
            Some(file) => {
                match result {
                    HostTensor::Float { values, .. } => write_npy(file, values, &shape)?,
                    HostTensor::Int { values, .. } => write_npy_i64(file, values, &shape)?,
                }
                println!("{}: {kind} {dims} written to {}", declared.name, file.display());
            }
            None => println!("{}: {kind} {dims}", declared.name),
        }
    }
    Ok(())
}

fn input_list(graph: &OnnxGraph) -> String {
    graph
        .inputs()
        .iter()
        .map(|d| format!("{} {}", d.name, describe_dims(&d.shape)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `<folder>/<output name>.npy` for every output: characters other than letters, digits, `.`,
/// `_` and `-` become `_` (ONNX names hold `/` and `:`); names that collide get `_<index>`.
fn output_files(graph: &OnnxGraph, folder: &Path) -> Vec<PathBuf> {
    let mut taken: HashSet<String> = HashSet::new();
    graph
        .outputs()
        .iter()
        .enumerate()
        .map(|(index, output)| {
            let mut stem: String = output
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if stem.is_empty() || stem.starts_with('.') {
                stem.insert(0, '_');
            }
            if !taken.insert(stem.to_ascii_lowercase()) {
                stem = format!("{stem}_{index}");
                taken.insert(stem.to_ascii_lowercase());
            }
            folder.join(format!("{stem}.npy"))
        })
        .collect()
}
