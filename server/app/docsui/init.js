// Starts Swagger UI on /docs. It lives in a file of its own, not inline in
// the page, so the page's Content-Security-Policy can forbid inline scripts.
// All URLs are relative to the page, so /docs also works behind a path
// prefix (an Ingress path such as /medops/docs).
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The public validator badge would call an outside host; the page must
    // work offline.
    validatorUrl: null,
    defaultModelsExpandDepth: 0,
    // The token stays in the page's memory only, never in localStorage.
    persistAuthorization: false,
  });
});
