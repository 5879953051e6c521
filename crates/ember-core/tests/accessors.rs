//! Per-image results without slicing flat vectors.

mod common;

use common::*;
use ember_core::{ClassTarget, Explainer, GradCam, maps_to_host, to_host};

#[test]
fn each_image_s_map_class_score_and_peak() {
    let model = GapNet::new(8);
    let explanation = Explainer::new(GradCam)
        .layer("features")
        .explain(
            &|x| model.forward(x),
            input(3, 9),
            &ClassTarget::PerImage(vec![0, 2, 4]),
        )
        .unwrap();
    let images = explanation.images().unwrap();
    let flat = maps_to_host(&explanation.maps).unwrap();
    let scores = to_host(&explanation.scores).unwrap();
    assert_eq!(images.len(), 3);
    for (i, image) in images.iter().enumerate() {
        assert_eq!(image.map.len(), SIZE);
        assert!(image.map.iter().all(|row| row.len() == SIZE));
        let rows: Vec<f32> = image.map.concat();
        assert_eq!(rows, flat[i * SIZE * SIZE..(i + 1) * SIZE * SIZE]);
        assert_eq!(image.class, Some([0, 2, 4][i]));
        assert_eq!(image.score, scores[i]);
        let largest = rows.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(image.peak.value, largest);
        assert_eq!(image.map[image.peak.y][image.peak.x], largest);
    }
}
