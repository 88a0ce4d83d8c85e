//! JPEG/PNG inputs: decoded (with size limits), resized to the declared size and normalized
//! per channel, `(pixel / Scale - Mean[c]) / Std[c]`, into an NCHW or NHWC float32 tensor —
//! as the Greengrass image-classification samples prepare their inputs.

use image::{ImageFormat, ImageReader, Limits, imageops::FilterType};

use crate::MlError;
use crate::spec::{ImageSpec, Layout, MAX_IMAGE_SIDE};
use crate::tensor::Tensor;

/// Most memory the decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// Whether `bytes` start like a PNG or a JPEG.
pub fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes, resizes and normalizes `bytes` into a `1×3×H×W` (or `1×H×W×3`) float32 tensor.
pub fn preprocess(input: &str, bytes: &[u8], spec: &ImageSpec) -> Result<Tensor, MlError> {
    let format = if bytes.starts_with(b"\x89PNG") {
        ImageFormat::Png
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        ImageFormat::Jpeg
    } else {
        return Err(MlError::input(
            input,
            "an image input must be a PNG or a JPEG",
        ));
    };
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| MlError::input(input, format!("decoding the {format:?} image: {e}")))?;
    let rgb = decoded.to_rgb8();
    let resized = if rgb.width() == spec.width && rgb.height() == spec.height {
        rgb
    } else {
        image::imageops::resize(&rgb, spec.width, spec.height, FilterType::Triangle)
    };
    let (w, h) = (spec.width as usize, spec.height as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (x, y, px) in resized.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for c in 0..3 {
            let source = if spec.bgr { 2 - c } else { c };
            let v = (px.0[source] as f32 / spec.scale - spec.mean[c]) / spec.std[c];
            let at = match spec.layout {
                Layout::Nchw => c * h * w + y * w + x,
                Layout::Nhwc => (y * w + x) * 3 + c,
            };
            out[at] = v;
        }
    }
    let shape = match spec.layout {
        Layout::Nchw => vec![1, 3, h, w],
        Layout::Nhwc => vec![1, h, w, 3],
    };
    Ok(Tensor::from_f32(shape, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn solid_png_is_resized_and_normalized_per_channel() {
        let spec = ImageSpec {
            width: 4,
            height: 2,
            layout: Layout::Nchw,
            bgr: false,
            scale: 255.0,
            mean: [0.5, 0.0, 0.0],
            std: [0.5, 1.0, 2.0],
        };
        let t = preprocess("img", &png(9, 7, [255, 51, 0]), &spec).unwrap();
        assert_eq!(t.shape, vec![1, 3, 2, 4]);
        let v = t.to_f64_vec();
        for (i, want) in [1.0, 0.2, 0.0].iter().enumerate() {
            for x in &v[i * 8..(i + 1) * 8] {
                assert!((x - want).abs() < 1e-6, "channel {i}: {x} vs {want}");
            }
        }
        let err = preprocess("img", b"\x89PNG\r\n\x1a\nbroken", &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("input img") && err.contains("decoding"),
            "{err}"
        );
    }
}
