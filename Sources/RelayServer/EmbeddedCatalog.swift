import Foundation
public import RelayCore

/// The model catalog this binary was built with: served when no `catalog` is configured, from any directory.
///
/// `json` is a copy of Config/models.json, which stays the one source: after editing it, `make embed-catalog`
/// refreshes the copy, and `EmbeddedCatalogTests` fails while the two differ.
public enum EmbeddedCatalog {
    /// Config/models.json as it was when this binary was built, byte for byte.
    public static let json = #"""
        {
         "_comment": "The model catalog: what each model is, its input defaults (filled in before keying), dedup policy and synthetic timing. seconds_per_step is per megapixel for images. price: what fal bills (unit_price per unit, in currency), with where each figure came from; unit_price null = not known, reported as unknown and never guessed.",
         "models": [
          {
           "id": "fal-ai/flux/dev",
           "title": "FLUX.1 [dev]",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "guidance_scale": 3.5, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.08,
           "price": {"unit_price": 0.025, "unit": "megapixels", "currency": "USD", "source": "fal's GET /v1/models/pricing as saved on 2026-03-10 in github.com/hhwjsw711/openstory src/lib/ai/fal-pricing-data.ts (20d3c76)"}
          },
          {
           "id": "fal-ai/flux/schnell",
           "title": "FLUX.1 [schnell]",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 4, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.08,
           "realtime": true,
           "price": {"unit_price": 0.003, "unit": "megapixels", "currency": "USD", "source": "fal's GET /v1/models/pricing as saved on 2026-03-10 in github.com/hhwjsw711/openstory src/lib/ai/fal-pricing-data.ts (20d3c76)"}
          },
          {
           "id": "fal-ai/flux-pro/v1.1",
           "title": "FLUX1.1 [pro]",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1, "guidance_scale": 3.5, "safety_tolerance": "2", "output_format": "jpeg"},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.06,
           "price": {"unit_price": 0.04, "unit": "megapixels", "currency": "USD", "source": "fal's pricing API as saved on 2026-01-04 in github.com/nunomen/claude-skills fal-ai/scripts/fal_helper.py (6735bcb)"}
          },
          {
           "id": "fal-ai/flux-pro/v1.1-ultra",
           "title": "FLUX1.1 [pro] ultra",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "landscape_16_9", "num_images": 1, "safety_tolerance": "2", "output_format": "jpeg"},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.09,
           "price": {"unit_price": 0.06, "unit": "images", "currency": "USD", "source": "fal's GET /v1/models/pricing as saved on 2026-03-10 in github.com/hhwjsw711/openstory src/lib/ai/fal-pricing-data.ts (20d3c76)"}
          },
          {
           "id": "fal-ai/flux-lora",
           "title": "FLUX.1 [dev] with LoRAs",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1, "guidance_scale": 3.5, "loras": []},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.09,
           "price": {"unit_price": 0.035, "unit": "megapixels", "currency": "USD", "source": "fal.ai/models pages as crawled on 2025-06-26 in github.com/adepanges/fal_ai_pricing_tables fal_ai_models.json (d754a24); may be out of date"}
          },
          {
           "id": "fal-ai/flux/krea",
           "title": "FLUX.1 Krea [dev]",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1, "guidance_scale": 4.5},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.08,
           "price": {"unit_price": 0.025, "unit": "megapixels", "currency": "USD", "source": "fal.ai/models/fal-ai/flux-1/krea/llms.txt (the same model under fal's newer alias), read 2026-12-06"}
          },
          {
           "id": "fal-ai/recraft/v3/text-to-image",
           "title": "Recraft V3",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 24, "enable_safety_checker": true, "image_size": "square_hd", "num_images": 1, "style": "realistic_image"},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.07,
           "price": {"unit_price": 0.04, "unit": "images", "currency": "USD", "source": "fal's GET /v1/models/pricing as saved on 2026-03-10 in github.com/hhwjsw711/openstory src/lib/ai/fal-pricing-data.ts (20d3c76)"}
          },
          {
           "id": "fal-ai/ideogram/v3",
           "title": "Ideogram V3",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 30, "enable_safety_checker": true, "image_size": "square_hd", "num_images": 1, "rendering_speed": "BALANCED", "expand_prompt": true},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.07,
           "price": {"unit_price": null, "source": "unknown: no published price found for this endpoint (2026-12-06)"}
          },
          {
           "id": "fal-ai/imagen4/preview",
           "title": "Imagen 4",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 30, "enable_safety_checker": true, "image_size": "square_hd", "num_images": 1, "aspect_ratio": "1:1"},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.07,
           "price": {"unit_price": 0.04, "unit": "images", "currency": "USD", "source": "fal.ai/models pages as crawled on 2025-06-26 in github.com/adepanges/fal_ai_pricing_tables fal_ai_models.json (d754a24); may be out of date"}
          },
          {
           "id": "fal-ai/sana",
           "title": "Sana",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 18, "enable_safety_checker": true, "image_size": "square_hd", "num_images": 1, "guidance_scale": 5},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.04,
           "price": {"unit_price": null, "source": "unknown: no published price found for this endpoint (fal-ai/sana/v1.5 variants have their own)"}
          },
          {
           "id": "fal-ai/hidream-i1-full",
           "title": "HiDream-I1 Full",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 50, "enable_safety_checker": true, "image_size": "square_hd", "num_images": 1, "guidance_scale": 5},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.06,
           "price": {"unit_price": 0.05, "unit": "megapixels", "currency": "USD", "source": "fal's GET /v1/models/pricing as saved on 2026-03-10 in github.com/hhwjsw711/openstory src/lib/ai/fal-pricing-data.ts (20d3c76)"}
          },
          {
           "id": "fal-ai/hidream-i1-dev",
           "title": "HiDream-I1 Dev",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "square_hd", "num_images": 1},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.06,
           "price": {"unit_price": 0.03, "unit": "megapixels", "currency": "USD", "source": "fal.ai/models pages as crawled on 2025-06-26 in github.com/adepanges/fal_ai_pricing_tables fal_ai_models.json (d754a24); may be out of date"}
          },
          {
           "id": "fal-ai/hidream-i1-fast",
           "title": "HiDream-I1 Fast",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 16, "enable_safety_checker": true, "image_size": "square_hd", "num_images": 1},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.06,
           "price": {"unit_price": 0.01, "unit": "megapixels", "currency": "USD", "source": "fal.ai/models pages as crawled on 2025-06-26 in github.com/adepanges/fal_ai_pricing_tables fal_ai_models.json (d754a24); may be out of date"}
          },
          {
           "id": "fal-ai/flux-pro/kontext",
           "title": "FLUX.1 Kontext [pro] (edit)",
           "kind": "image-edit",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1, "guidance_scale": 3.5, "safety_tolerance": "2", "output_format": "jpeg"},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.07,
           "required": ["prompt", "image_url"],
           "price": {"unit_price": 0.04, "unit": "images", "currency": "USD", "source": "fal.ai/models pages as crawled on 2025-06-26 in github.com/adepanges/fal_ai_pricing_tables fal_ai_models.json (d754a24); may be out of date"}
          },
          {
           "id": "fal-ai/flux-pro/kontext/max",
           "title": "FLUX.1 Kontext [max] (edit)",
           "kind": "image-edit",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1, "guidance_scale": 3.5, "safety_tolerance": "2", "output_format": "jpeg"},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.09,
           "required": ["prompt", "image_url"],
           "price": {"unit_price": 0.08, "unit": "images", "currency": "USD", "source": "https://lumenfall.ai/models/black-forest-labs/flux.1-kontext-max (third-party page; no fal page found)"}
          },
          {
           "id": "fal-ai/flux-kontext/dev",
           "title": "FLUX.1 Kontext [dev] (edit)",
           "kind": "image-edit",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 28, "enable_safety_checker": true, "image_size": "landscape_4_3", "num_images": 1, "guidance_scale": 2.5},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.08,
           "required": ["prompt", "image_url"],
           "price": {"unit_price": null, "source": "unknown: only a third-party page quotes it, and whether fal bills it per image or per megapixel is unclear"}
          },
          {
           "id": "fal-ai/fast-lcm-diffusion",
           "title": "Fast LCM Diffusion (realtime)",
           "kind": "image",
           "dedup": "seeded",
           "defaults": {"num_inference_steps": 6, "enable_safety_checker": true, "image_size": "square", "num_images": 1},
           "ignored_fields": ["sync_mode"],
           "seconds_per_step": 0.02,
           "realtime": true,
           "price": {"unit_price": null, "unit": "compute seconds", "source": "unknown: billed per GPU compute second; the rate is not published"}
          },
          {
           "id": "fal-ai/kling-video/v2.1/standard/text-to-video",
           "title": "Kling 2.1 (video)",
           "kind": "video",
           "defaults": {"duration": 5, "aspect_ratio": "16:9", "num_inference_steps": 20, "num_frames": 16},
           "seconds_per_step": 0.25,
           "price": {"unit_price": null, "source": "unknown: no fal page or pricing snapshot found for this endpoint id"}
          },
          {
           "id": "fal-ai/veo3",
           "title": "Veo 3 (video)",
           "kind": "video",
           "defaults": {"duration": 8, "aspect_ratio": "16:9", "num_inference_steps": 24, "num_frames": 24},
           "seconds_per_step": 0.3,
           "price": {"unit_price": 0.4, "unit": "seconds", "currency": "USD", "source": "fal's GET /v1/models/pricing as saved on 2026-03-10 in github.com/hhwjsw711/openstory src/lib/ai/fal-pricing-data.ts (20d3c76); with audio (fal's page: $0.20/s with audio off)"}
          },
          {
           "id": "fal-ai/minimax/hailuo-02/standard/text-to-video",
           "title": "MiniMax Hailuo-02 (video)",
           "kind": "video",
           "defaults": {"duration": 6, "num_inference_steps": 20, "num_frames": 16},
           "seconds_per_step": 0.25,
           "price": {"unit_price": 0.045, "unit": "seconds", "currency": "USD", "source": "fal.ai/models pages as crawled on 2025-06-26 in github.com/adepanges/fal_ai_pricing_tables fal_ai_models.json (d754a24); may be out of date"}
          },
          {
           "id": "fal-ai/ltx-video",
           "title": "LTX-Video",
           "kind": "video",
           "defaults": {"num_inference_steps": 20, "num_frames": 16},
           "seconds_per_step": 0.1,
           "price": {"unit_price": 0.04, "unit": "seconds", "currency": "USD", "source": "fal's pricing API as saved on 2026-01-04 in github.com/nunomen/claude-skills fal-ai/scripts/fal_helper.py (6735bcb)"}
          },
          {
           "id": "fal-ai/kling-video/v2.1/standard/image-to-video",
           "title": "Kling 2.1 image-to-video",
           "kind": "video",
           "required": ["prompt", "image_url"],
           "defaults": {"duration": 5, "num_inference_steps": 20, "num_frames": 16},
           "seconds_per_step": 0.25,
           "price": {"unit_price": 0.056, "unit": "seconds", "currency": "USD", "source": "https://fal.ai/models/fal-ai/kling-video/v2.1/standard/image-to-video/llms.txt (fal's model page, read 2026-12-06); $0.28 for the first 5 s, $0.056 per further second"}
          },
          {
           "id": "fal-ai/kokoro/american-english",
           "title": "Kokoro TTS",
           "kind": "audio",
           "dedup": "always",
           "required": ["prompt"],
           "defaults": {"voice": "af_heart", "speed": 1},
           "seconds_per_step": 0.05,
           "price": {"unit_price": null, "source": "unknown: no published price found for this endpoint (fal-ai/kokoro has its own)"}
          },
          {
           "id": "fal-ai/minimax/speech-02-hd",
           "title": "MiniMax Speech-02 HD",
           "kind": "audio",
           "dedup": "always",
           "required": ["text"],
           "defaults": {"voice_setting": {"voice_id": "Wise_Woman", "speed": 1}, "output_format": "url"},
           "seconds_per_step": 0.08,
           "price": {"unit_price": null, "source": "unknown: no published price found for this endpoint id"}
          },
          {
           "id": "fal-ai/elevenlabs/tts/multilingual-v2",
           "title": "ElevenLabs TTS Multilingual v2",
           "kind": "audio",
           "dedup": "always",
           "required": ["text"],
           "defaults": {"voice": "Rachel", "stability": 0.5},
           "seconds_per_step": 0.06,
           "price": {"unit_price": null, "source": "unknown: no published price found for this endpoint"}
          },
          {
           "id": "fal-ai/stable-audio",
           "title": "Stable Audio (music and effects)",
           "kind": "audio",
           "required": ["prompt"],
           "defaults": {"seconds_total": 8, "steps": 100},
           "seconds_per_step": 0.1,
           "price": {"unit_price": null, "unit": "compute seconds", "source": "unknown: billed per GPU compute second; fal.ai/models/fal-ai/stable-audio/llms.txt rounds the rate to $0"}
          },
          {
           "id": "fal-ai/any-llm",
           "title": "Any LLM",
           "kind": "text",
           "required": ["prompt"],
           "defaults": {"model": "google/gemini-flash-1.5", "max_tokens": 120},
           "seconds_per_step": 0.02,
           "price": {"unit_price": null, "source": "unknown: billed by input and output tokens of the model it routes to; no single unit price"}
          }
         ]
        }
        """#

    /// The catalog to serve: the file at `path` when one is configured (flag, environment or config file, in that
    /// order), else the built-in one.
    public static func catalog(orFileAt path: String?) throws(ConfigurationError) -> ModelCatalog {
        guard let path else {
            do {
                return try ModelCatalog(json: Array(json.utf8))
            } catch {
                throw ConfigurationError("built-in model catalog: \(error.description)")
            }
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read model catalog \(path)")
        }
        do {
            return try ModelCatalog(json: [UInt8](data))
        } catch {
            throw ConfigurationError("model catalog \(path): \(error.description)")
        }
    }
}
