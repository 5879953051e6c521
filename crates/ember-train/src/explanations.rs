//! A fixed set of validation images explained at stages of a training run (the end of each
//! epoch, every N steps): one comparison sheet per stage and an `index.html` that shows how the
//! maps change from stage to stage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use ember_core::{ClassTarget, Explainer, maps_to_host, to_host};
use ember_vision::{Colormap, Sheet, escape_html, overlay, save_picture, write_atomically};
use image::RgbImage;
use image::imageops::{self, FilterType};

use crate::{ImageClassifier, TrainError};

/// When in training a set of explanations was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// After an epoch (burn-train counts epochs from 1).
    Epoch(usize),
    /// After an optimizer step.
    Step(usize),
}

impl Stage {
    /// The sheet's file name: `epoch-003.png`, `step-000500.png` (sorted names sort by stage).
    pub fn file_name(self) -> String {
        match self {
            Stage::Epoch(n) => format!("epoch-{n:03}.png"),
            Stage::Step(n) => format!("step-{n:06}.png"),
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Epoch(n) => write!(f, "epoch {n}"),
            Stage::Step(n) => write!(f, "step {n}"),
        }
    }
}

/// What one stage's explanations found, as the index lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecord {
    /// The stage.
    pub stage: Stage,
    /// The sheet, inside the output folder.
    pub sheet: PathBuf,
    /// The predicted class of each validation image.
    pub predictions: Vec<usize>,
    /// How many of them equal the true class.
    pub correct: usize,
    /// Seconds spent explaining and drawing the stage (the training's extra cost).
    pub seconds: f64,
    /// Facts recorded for the stage by the caller or the training loop (`test accuracy`, …).
    pub facts: Vec<(String, String)>,
}

/// Validation images explained at each stage of a training run.
///
/// The images are fixed at construction; each [`explain`](Self::explain) call runs every column's
/// explainer on the model as it is at that stage (a validation copy of it: no parameter
/// receives a gradient and the training state is not touched), writes a sheet (one row per
/// image with its true and predicted class, one column per explainer) and rewrites
/// `index.html`. It is `Sync`: a burn-train checkpointer thread and a metric logger can share it.
#[derive(Debug)]
pub struct TrainingExplanations {
    out_dir: PathBuf,
    class_names: Vec<String>,
    /// The network's inputs `[N, C, H, W]`, on the host: each stage puts them on the model's
    /// device.
    inputs: TensorData,
    /// What a person sees of each input.
    pictures: Vec<RgbImage>,
    labels: Vec<usize>,
    columns: Vec<(String, Explainer)>,
    /// Longer side of a picture on the sheet.
    cell: u32,
    state: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    records: Vec<StageRecord>,
    /// Facts recorded before their stage was explained.
    pending: Vec<(Stage, String, String)>,
}

impl TrainingExplanations {
    /// Explanations of `inputs` (`[N, C, H, W]`, as the network takes them), shown over
    /// `pictures` (one per input, of the inputs' height and width), whose true classes are
    /// `labels` (indices into `class_names`), written into `out_dir` (created if missing).
    /// Columns are added with [`column`](Self::column); at least one is needed.
    pub fn new(
        out_dir: impl Into<PathBuf>,
        class_names: Vec<String>,
        inputs: Tensor<4>,
        pictures: Vec<RgbImage>,
        labels: Vec<usize>,
    ) -> Result<Self, TrainError> {
        let out_dir = out_dir.into();
        let [count, _, height, width] = inputs.dims();
        if count == 0 {
            return Err(TrainError::Setup("no validation images to explain".into()));
        }
        if pictures.len() != count || labels.len() != count {
            return Err(TrainError::Setup(format!(
                "{count} validation inputs, {} pictures and {} labels: one of each per image",
                pictures.len(),
                labels.len()
            )));
        }
        if let Some(picture) = pictures
            .iter()
            .find(|p| (p.height() as usize, p.width() as usize) != (height, width))
        {
            return Err(TrainError::Setup(format!(
                "a picture of {}×{} for inputs of {width}×{height}",
                picture.width(),
                picture.height()
            )));
        }
        if let Some(&label) = labels.iter().find(|&&l| l >= class_names.len()) {
            return Err(TrainError::Setup(format!(
                "true class {label} of a validation image, but there are {} classes",
                class_names.len()
            )));
        }
        if out_dir.exists() && !out_dir.is_dir() {
            return Err(TrainError::Setup(format!(
                "{} exists and is not a folder",
                out_dir.display()
            )));
        }
        std::fs::create_dir_all(&out_dir).map_err(|source| TrainError::Io {
            path: out_dir.clone(),
            source,
        })?;
        Ok(Self {
            out_dir,
            class_names,
            inputs: inputs.into_data(),
            pictures,
            labels,
            columns: Vec::new(),
            cell: 112,
            state: Mutex::new(History::default()),
        })
    }

    /// Adds a column: the maps of `explainer`, headed `label`.
    pub fn column(mut self, label: impl Into<String>, explainer: Explainer) -> Self {
        self.columns.push((label.into(), explainer));
        self
    }

    /// Pictures are drawn `pixels` on their longer side (112 unless set; small inputs are
    /// enlarged).
    pub fn cell_size(mut self, pixels: u32) -> Self {
        self.cell = pixels.max(16);
        self
    }

    /// The output folder.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The records of every stage explained so far, in order.
    pub fn records(&self) -> Vec<StageRecord> {
        self.history().records.clone()
    }

    /// Records a fact about `stage` (`test accuracy` = `0.8123`), shown in the index (and in the
    /// sheet's title when recorded before the stage is explained, as burn-train's metrics are).
    pub fn record_fact(
        &self,
        stage: Stage,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), TrainError> {
        let (name, value) = (name.into(), value.into());
        let mut history = self.history();
        match history.records.iter_mut().find(|r| r.stage == stage) {
            Some(record) => {
                record.facts.retain(|(n, _)| *n != name);
                record.facts.push((name, value));
                let page = self.index_html(&history.records);
                drop(history);
                self.write_index(&page)
            }
            None => {
                history.pending.retain(|(s, n, _)| !(*s == stage && *n == name));
                history.pending.push((stage, name, value));
                Ok(())
            }
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        // A panic elsewhere while the lock was held leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Explains the validation images with `model` as it is at `stage`, writes the stage's sheet
    /// and rewrites `index.html`.
    ///
    /// The model may live on an autodiff device (in training): it is explained through its
    /// validation copy ([`Module::valid`]), so no parameter gradient is computed, no autodiff
    /// graph is kept and the model itself is left as it was.
    pub fn explain<M: ImageClassifier>(&self, stage: Stage, model: &M) -> Result<StageRecord, TrainError> {
        let started = Instant::now();
        let model = model.valid();
        let device = model
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| TrainError::Setup("the model has no parameters to find its device by".into()))?;
        let inputs = Tensor::<4>::from_data(self.inputs.clone(), &device);
        let forward = |x: Tensor<4>| model.classify(x);

        if self.columns.is_empty() {
            return Err(TrainError::Setup(
                "no explainer to show: add a column, e.g. .column(\"gradcam\", Explainer::new(GradCam).layer(\"…\"))"
                    .into(),
            ));
        }
        let columns = &self.columns[..];
        let mut maps = Vec::with_capacity(columns.len());
        let mut output = None;
        for (label, explainer) in columns {
            let explanation = explainer
                .explain(&forward, inputs.clone(), &ClassTarget::TopClass)
                .map_err(|source| TrainError::Explain {
                    stage,
                    column: label.clone(),
                    source,
                })?;
            maps.push(maps_to_host(&explanation.maps).map_err(|source| TrainError::Explain {
                stage,
                column: label.clone(),
                source,
            })?);
            output.get_or_insert(explanation.output);
        }
        let output = output.expect("at least one column");
        let [count, classes] = output.dims();
        let probabilities = to_host(&softmax(output, 1)).map_err(|source| TrainError::Explain {
            stage,
            column: columns[0].0.clone(),
            source,
        })?;
        let predictions: Vec<usize> = probabilities
            .chunks(classes)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |best, (i, &p)| if p > best.1 { (i, p) } else { best },
                    )
                    .0
            })
            .collect();
        let correct = predictions.iter().zip(&self.labels).filter(|(p, l)| p == l).count();

        let mut history = self.history();
        // A stage explained again keeps the facts recorded for it before.
        let mut facts: Vec<(String, String)> = history
            .records
            .iter()
            .find(|r| r.stage == stage)
            .map(|r| r.facts.clone())
            .unwrap_or_default();
        for (_, name, value) in history.pending.iter().filter(|(s, _, _)| *s == stage) {
            facts.retain(|(n, _)| n != name);
            facts.push((name.clone(), value.clone()));
        }
        history.pending.retain(|(s, _, _)| *s != stage);
        drop(history);

        let mut title = format!("{stage}: {correct} of {count} classified correctly");
        for (name, value) in &facts {
            let _ = write!(title, " · {name} {value}");
        }
        let mut headers = vec!["image".to_owned()];
        headers.extend(columns.iter().map(|(label, _)| label.clone()));
        let mut sheet = Sheet::new(title, headers).max_cell(self.cell);
        let pixels_per_map = self.pictures[0].width() as usize * self.pictures[0].height() as usize;
        let colormap = Colormap::jet();
        for (index, picture) in self.pictures.iter().enumerate() {
            let (predicted, truth) = (predictions[index], self.labels[index]);
            let probability = probabilities[index * classes + predicted];
            let mark = if predicted == truth { "✓" } else { "✗" };
            let label = format!(
                "{mark} {} → {} {:.0}%",
                self.class_name(truth),
                self.class_name(predicted),
                100.0 * probability
            );
            let mut cells = vec![self.enlarged(picture)];
            for column_maps in &maps {
                let map = &column_maps[index * pixels_per_map..(index + 1) * pixels_per_map];
                cells.push(self.enlarged(&overlay(picture, map, &colormap, 0.5)?));
            }
            sheet.row(label, cells)?;
        }
        let sheet_path = self.out_dir.join(stage.file_name());
        save_picture(&sheet.render()?, &sheet_path)?;

        let record = StageRecord {
            stage,
            sheet: sheet_path,
            predictions,
            correct,
            seconds: started.elapsed().as_secs_f64(),
            facts,
        };
        let mut history = self.history();
        history.records.retain(|r| r.stage != stage);
        history.records.push(record.clone());
        history.records.sort_by_key(|r| r.stage);
        let page = self.index_html(&history.records);
        drop(history);
        self.write_index(&page)?;
        Ok(record)
    }

    fn class_name(&self, class: usize) -> &str {
        self.class_names.get(class).map_or("?", String::as_str)
    }

    /// A picture scaled so that its longer side is the cell size (nearest neighbour when
    /// enlarging keeps small inputs' pixels visible).
    fn enlarged(&self, picture: &RgbImage) -> RgbImage {
        let longer = picture.width().max(picture.height()).max(1);
        if longer >= self.cell {
            return picture.clone();
        }
        let scale = self.cell / longer;
        imageops::resize(
            picture,
            picture.width() * scale,
            picture.height() * scale,
            FilterType::Nearest,
        )
    }

    fn write_index(&self, page: &str) -> Result<(), TrainError> {
        let path = self.out_dir.join("index.html");
        write_atomically(&path, |writer| std::io::Write::write_all(writer, page.as_bytes()))
            .map_err(|source| TrainError::Io { path, source })
    }

    /// The index: a table of the stages and one sheet at a time with a slider (every sheet
    /// listed below it, for readers without scripts).
    fn index_html(&self, records: &[StageRecord]) -> String {
        let mut fact_names: Vec<&str> = Vec::new();
        for (name, _) in records.iter().flat_map(|r| &r.facts) {
            if !fact_names.contains(&name.as_str()) {
                fact_names.push(name);
            }
        }
        let mut page = String::from(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Explanations during training</title>\n<style>\n\
             body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f6f6f4; color: #1d1d1d; }\n\
             table { border-collapse: collapse; margin: 1rem 0; background: white; }\n\
             th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; text-align: right; }\n\
             th:first-child, td:first-child { text-align: left; }\n\
             img { max-width: 100%; background: white; box-shadow: 0 1px 3px #0003; }\n\
             .stage { margin: 1.5rem 0; }\n</style>\n</head>\n<body>\n<h1>Explanations during training</h1>\n",
        );
        let _ = writeln!(
            page,
            "<p>{} validation images, explained after each stage with the model as it was then; \
             rows: true class → predicted class and its probability.</p>",
            self.labels.len()
        );
        page.push_str("<table>\n<tr><th>stage</th><th>correct</th>");
        for name in &fact_names {
            let _ = write!(page, "<th>{}</th>", escape_html(name));
        }
        page.push_str("<th>seconds explaining</th></tr>\n");
        for record in records {
            let _ = write!(
                page,
                "<tr><td><a href=\"#{id}\">{stage}</a></td><td>{} / {}</td>",
                record.correct,
                record.predictions.len(),
                id = anchor(record.stage),
                stage = record.stage
            );
            for name in &fact_names {
                let value = record
                    .facts
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("", |(_, v)| v.as_str());
                let _ = write!(page, "<td>{}</td>", escape_html(value));
            }
            let _ = writeln!(page, "<td>{:.3}</td></tr>", record.seconds);
        }
        page.push_str("</table>\n");
        if let Some(last) = records.last() {
            let _ = writeln!(
                page,
                "<p><label>stage <input id=\"slider\" type=\"range\" min=\"0\" max=\"{}\" value=\"{}\"></label> \
                 <span id=\"shown\">{}</span></p>\n<img id=\"current\" src=\"{}\" alt=\"{}\">",
                records.len() - 1,
                records.len() - 1,
                last.stage,
                sheet_href(last),
                last.stage
            );
        }
        page.push_str("<h2>Every stage</h2>\n");
        for record in records {
            let _ = writeln!(
                page,
                "<div class=\"stage\" id=\"{}\"><h3>{}</h3><img src=\"{}\" alt=\"{}\" loading=\"lazy\"></div>",
                anchor(record.stage),
                record.stage,
                sheet_href(record),
                record.stage
            );
        }
        page.push_str("<script>\nconst stages = [");
        for record in records {
            let _ = write!(page, "[\"{}\", \"{}\"],", record.stage, sheet_href(record));
        }
        page.push_str(
            "];\nconst slider = document.getElementById('slider');\n\
             if (slider) slider.addEventListener('input', () => {\n\
             \x20 const [name, src] = stages[slider.value];\n\
             \x20 document.getElementById('current').src = src;\n\
             \x20 document.getElementById('current').alt = name;\n\
             \x20 document.getElementById('shown').textContent = name;\n});\n</script>\n</body>\n</html>\n",
        );
        page
    }
}

fn anchor(stage: Stage) -> String {
    stage.file_name().trim_end_matches(".png").to_owned()
}

fn sheet_href(record: &StageRecord) -> String {
    let name = record
        .sheet
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ember_vision::relative_href(&name)
}
