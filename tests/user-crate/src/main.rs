//! Explains the imported model on a pre-processed tensor and writes the map, as a user's program
//! would: `ember-user-crate <input.npy> <map.npy>`.

use ember_cam::burn::tensor::{Device, Tensor, TensorData};
use ember_cam::vision::{read_npy, write_npy};
use ember_cam::{ClassTarget, Explainer, GradCam};

mod model {
    include!(concat!(env!("OUT_DIR"), "/imported.rs"));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        return Err("usage: ember-user-crate <input.npy> <map.npy>".into());
    };
    let device = Device::flex();
    let model = model::Model::from_embedded(&device);
    let (values, shape) = read_npy(input.as_ref())?;
    let input = Tensor::<4>::from_data(TensorData::new(values, shape), &device);
    let explanation = Explainer::new(GradCam).explain(&model, input, &ClassTarget::TopClass)?;
    let [_, height, width] = explanation.maps.dims();
    let map = ember_cam::maps_to_host(&explanation.maps)?;
    write_npy(output.as_ref(), &map[..height * width], &[height as u64, width as u64])?;
    println!("final activation: {:?}", model::FINAL_ACTIVATION);
    Ok(())
}
