from apps.chat.rendering import render_markdown


def test_markdown_is_rendered():
    html = render_markdown("**bold** and `code`\n\n- one\n- two")
    assert html == (
        "<p><strong>bold</strong> and <code>code</code></p>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>"
    )


def test_scripts_handlers_and_images_are_removed():
    html = render_markdown(
        '<script>alert(1)</script><p onclick="x()">hi</p>\n\n![t](http://evil.example/x.png)'
        '<img src="http://evil.example/y.png" onerror="x()">'
    )
    assert "<script" not in html and "alert(1)" not in html
    assert "onclick" not in html and "onerror" not in html
    assert "<img" not in html and "evil.example" not in html
    assert "hi" in html


def test_javascript_links_lose_their_target():
    html = render_markdown("[x](javascript:alert(1)) [y](https://example.org)")
    assert "javascript:" not in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">y</a>' in html


def test_code_keeps_only_language_classes():
    html = render_markdown('```python\nx = 1\n```\n\n<code class="message streaming">y</code>')
    assert '<code class="language-python">' in html
    assert "streaming" not in html
